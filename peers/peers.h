/*
 * Peers (PROTOCOL.md 6): this instance's heartbeat (peer.alive on
 * internal.<service>), answers to status requests, the table of peers it
 * hears, the status of any service, and the broker latency probe.
 */
#ifndef MM_PEERS_H
#define MM_PEERS_H

#include "internal.h"

/* From mm_new unless MM_OPT_NO_PEERS: hooks, the internal listeners, the
 * heartbeat timer. (With MM_OPT_NO_PEERS the module's state is created on the
 * first mm_get_status/mm_wait_service, without heartbeats: peers_int.h.) */
int mmi_peers_attach(mm_t *mm);

/* Publish our status now (election/: right after stepping up or down). */
void mmi_peers_announce(mm_t *mm);

#endif
