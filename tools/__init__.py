"""Tools that rebuild the bundled data; they run from a checkout and are not installed."""
