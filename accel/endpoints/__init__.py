"""Sources of local endpoints (addresses whose sockets live on this node) and
the pure logic that turns them into the datapath's endpoint map."""
