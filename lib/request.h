/* The request table (lib/request.c), as seen by the publishing channel. */
#ifndef MM_REQUEST_H
#define MM_REQUEST_H

#include "internal.h"

/* A mandatory request came back (no queue): fail it now. False when unknown. */
bool mmi_request_returned(mm_t *mm, amqp_bytes_t correlation_id, amqp_bytes_t routing_key);

#endif
