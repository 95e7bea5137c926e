"""localstripe on a free loopback port (filled in by the payments work)."""
