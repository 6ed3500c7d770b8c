"""``asyncfetch serve``: the download service and LAN mirror."""
