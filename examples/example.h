/*
 * What every example shares: where the broker is.
 */
#ifndef MM_EXAMPLE_H
#define MM_EXAMPLE_H

#include <stdlib.h>

/* argv[1], else $MM_URI, else $MM_TEST_URI (set by the test harness), else
 * NULL: the library's own default (amqp://localhost). */
static inline const char *
example_uri(int argc, char **argv)
{
    if (argc > 1 && argv[1][0] != '\0')
        return argv[1];
    if (getenv("MM_URI") != NULL)
        return getenv("MM_URI");
    return getenv("MM_TEST_URI");
}

#endif
