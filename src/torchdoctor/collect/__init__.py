"""Collection: hooks, clocks, sync modes and step markers. Writes a Session; never renders."""
