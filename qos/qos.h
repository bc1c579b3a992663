/* QoS on an instance (qos/qos.c): the samplers on a timer, the controller's
 * decisions applied to the routes, the pressure events. */
#ifndef MM_QOS_H
#define MM_QOS_H

#include "internal.h"

/* From mm_new with MM_OPT_QOS. */
int mmi_qos_attach(mm_t *mm);

#endif
