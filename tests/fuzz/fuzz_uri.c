/* Fuzz target: the broker URI parser must never crash, leak or read out of
 * bounds, and an accepted URI must redact to a URI that parses back to the
 * same user, host, port and vhost with "***" as the password (a memory://
 * URI: to the same broker name). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "micromsg.h"
#include "uri.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *s = malloc(size + 1);
    if (s == NULL)
        return 0;
    memcpy(s, data, size);
    s[size] = '\0';
    struct mmi_uri u;
    char err[256];
    if (mmi_uri_parse(s, &u, err, sizeof err) == MM_OK) {
        /* The redacted form parses back to the same place, with "***" as password. */
        char *r = mmi_uri_redact(&u);
        struct mmi_uri back;
        if (r != NULL && mmi_uri_parse(r, &back, err, sizeof err) != MM_OK)
            abort();
        if (r != NULL && u.memory != NULL &&
            (back.memory == NULL || strcmp(back.memory, u.memory) != 0))
            abort();
        if (r != NULL && u.memory == NULL &&
            (back.memory != NULL || strcmp(back.user, u.user) != 0 ||
             strcmp(back.pass, "***") != 0 || strcmp(back.host, u.host) != 0 ||
             strcmp(back.vhost, u.vhost) != 0 || back.port != u.port || back.tls != u.tls))
            abort();
        if (r != NULL)
            mmi_uri_free(&back);
        free(r);
    }
    mmi_uri_free(&u);
    free(s);
    return 0;
}
