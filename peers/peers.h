/*
 * Peers (PROTOCOL.md 6): this instance's heartbeat (peer.alive on
 * internal.<service>), answers to status requests, the table of peers it
 * hears, the status of any service, and the broker latency probe.
 */
#ifndef MM_PEERS_H
#define MM_PEERS_H

#include "internal.h"

/* From mm_new unless MM_OPT_NO_PEERS. */
int mmi_peers_attach(mm_t *mm);

/* Publish our status now (election/: right after stepping up or down). */
void mmi_peers_announce(mm_t *mm);

#endif
