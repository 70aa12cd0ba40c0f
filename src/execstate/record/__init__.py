"""Record: every order, fill, delta, snapshot, dead letter and reconciliation in ClickHouse, exactly once."""
