"""Failover of bonded and secondary uplinks: the group policy runtime, the bond and route
actuators, and peer notification (gratuitous ARP and unsolicited neighbour advertisements
after a switch, so upstream caches follow at once)."""
