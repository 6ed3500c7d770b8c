"""The test suite: its folders mirror the package's; the fault server is tests/faultserver/."""
