/*
 * Broker URI parsing, after the RabbitMQ URI specification: the scheme picks
 * TCP or TLS, user, password and vhost are percent-decoded, no path means the
 * vhost "/" and an empty path the empty vhost, and the query carries
 * connection parameters. Unknown query keys are refused so that a typo does
 * not silently fall back to a default. Error texts never contain the password.
 * memory://NAME names an in-process broker (lib/mem/): NAME follows the rules
 * of a service name, and nothing else may follow it.
 */
#include "uri.h"

#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "micromsg.h"

struct cursor {
    char *err;
    size_t errlen;
};

static int bad(struct cursor *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static int
bad(struct cursor *c, const char *fmt, ...)
{
    va_list ap;
    int n = snprintf(c->err, c->errlen, "bad URI: ");
    if (n < 0 || (size_t) n >= c->errlen)
        return MM_EURI;
    va_start(ap, fmt);
    vsnprintf(c->err + n, c->errlen - (size_t) n, fmt, ap);
    va_end(ap);
    return MM_EURI;
}

static int
hexval(int ch)
{
    if (ch >= '0' && ch <= '9')
        return ch - '0';
    ch = tolower(ch);
    if (ch >= 'a' && ch <= 'f')
        return ch - 'a' + 10;
    return -1;
}

/* Percent-decode s[0..len) into a new string; %00 is refused (C strings). */
static int
decode(struct cursor *c, const char *s, size_t len, const char *what, char **ret)
{
    char *out = malloc(len + 1);
    size_t o = 0;
    if (out == NULL)
        return MM_ENOMEM;
    for (size_t i = 0; i < len; i++) {
        if (s[i] != '%') {
            out[o++] = s[i];
            continue;
        }
        int hi = i + 2 < len ? hexval((unsigned char) s[i + 1]) : -1;
        int lo = i + 2 < len ? hexval((unsigned char) s[i + 2]) : -1;
        if (hi < 0 || lo < 0 || (hi == 0 && lo == 0)) {
            free(out);
            return bad(c, "bad percent-encoding in the %s", what);
        }
        out[o++] = (char) (hi * 16 + lo);
        i += 2;
    }
    out[o] = '\0';
    *ret = out;
    return MM_OK;
}

static int
parse_int(struct cursor *c, const char *s, long lo, long hi, const char *what, int *ret)
{
    char *end = NULL;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (*s == '\0' || *end != '\0' || errno != 0 || !isdigit((unsigned char) *s))
        return bad(c, "%s '%s' is not a number", what, s);
    if (v < lo || v > hi)
        return bad(c, "%s %ld out of range [%ld, %ld]", what, v, lo, hi);
    *ret = (int) v;
    return MM_OK;
}

static int
parse_scheme(struct cursor *c, const char *s, struct mmi_uri *u, const char **rest)
{
    const char *sep = strstr(s, "://");
    if (sep == NULL)
        return bad(c, "missing scheme (expected amqp://, amqps:// or memory://)");
    size_t n = (size_t) (sep - s);
    if (n == 4 && strncasecmp(s, "amqp", 4) == 0) {
        u->tls = false;
    } else if (n == 5 && strncasecmp(s, "amqps", 5) == 0) {
        u->tls = true;
    } else {
        return bad(c, "unknown scheme '%.*s' (expected amqp, amqps or memory)",
                   (int) (n > 16 ? 16 : n), s);
    }
    *rest = sep + 3;
    return MM_OK;
}

static int
parse_userinfo(struct cursor *c, const char *s, size_t len, struct mmi_uri *u)
{
    const char *colon = memchr(s, ':', len);
    size_t ulen = colon ? (size_t) (colon - s) : len;
    int rc = decode(c, s, ulen, "user name", &u->user);
    if (rc != MM_OK)
        return rc;
    if (colon == NULL)
        return decode(c, "", 0, "password", &u->pass);
    return decode(c, colon + 1, len - ulen - 1, "password", &u->pass);
}

static int
parse_port(struct cursor *c, const char *s, size_t len, struct mmi_uri *u)
{
    char buf[16];
    if (len == 0 || len >= sizeof buf)
        return bad(c, "bad port");
    memcpy(buf, s, len);
    buf[len] = '\0';
    return parse_int(c, buf, 1, 65535, "port", &u->port);
}

/* A host name (not an IPv6 literal) after decoding: no ':', spaces or controls. */
static bool
host_name_ok(const char *h)
{
    for (; *h != '\0'; h++)
        if ((unsigned char) *h <= ' ' || *h == ':' || *h == '/' || *h == '@' || *h == 0x7f)
            return false;
    return true;
}

static int
parse_hostport(struct cursor *c, const char *s, size_t len, struct mmi_uri *u)
{
    const char *host = s, *after;
    size_t hlen;
    if (len > 0 && s[0] == '[') {
        const char *close = memchr(s, ']', len);
        if (close == NULL)
            return bad(c, "unterminated IPv6 address");
        host = s + 1;
        hlen = (size_t) (close - host);
        after = close + 1;
        if (hlen == 0 || strspn(host, "0123456789abcdefABCDEF:.") < hlen)
            return bad(c, "bad IPv6 address");
    } else {
        const char *colon = memchr(s, ':', len);
        hlen = colon ? (size_t) (colon - s) : len;
        after = s + hlen;
    }
    size_t alen = len - (size_t) (after - s);
    if (alen > 0 && after[0] != ':')
        return bad(c, "unexpected text after the host");
    int rc = hlen == 0 ? decode(c, "localhost", 9, "host", &u->host)
                       : decode(c, host, hlen, "host", &u->host);
    if (rc == MM_OK && s[0] != '[' && !host_name_ok(u->host))
        return bad(c, "bad character in the host name");
    if (rc != MM_OK || alen == 0)
        return rc;
    return parse_port(c, after + 1, alen - 1, u);
}

static int
parse_authority(struct cursor *c, const char *s, size_t len, struct mmi_uri *u)
{
    const char *at = NULL;
    for (size_t i = 0; i < len; i++)
        if (s[i] == '@')
            at = s + i;
    int rc;
    if (at != NULL) {
        rc = parse_userinfo(c, s, (size_t) (at - s), u);
        if (rc != MM_OK)
            return rc;
        len -= (size_t) (at + 1 - s);
        s = at + 1;
    } else {
        u->user = strdup("guest");
        u->pass = strdup("guest");
        if (u->user == NULL || u->pass == NULL)
            return MM_ENOMEM;
    }
    return parse_hostport(c, s, len, u);
}

static int
set_string(const char *v, char **dst)
{
    free(*dst);
    *dst = strdup(v);
    return *dst ? MM_OK : MM_ENOMEM;
}

static int
set_param(struct cursor *c, const char *k, const char *v, struct mmi_uri *u)
{
    if (strcmp(k, "heartbeat") == 0)
        return parse_int(c, v, 0, 65535, "heartbeat", &u->heartbeat);
    if (strcmp(k, "frame_max") == 0)
        return parse_int(c, v, 4096, INT_MAX, "frame_max", &u->frame_max);
    if (strcmp(k, "channel_max") == 0)
        return parse_int(c, v, 0, 65535, "channel_max", &u->channel_max);
    if (strcmp(k, "connection_timeout") == 0)
        return parse_int(c, v, 1, INT_MAX, "connection_timeout", &u->connection_timeout_ms);
    bool tls_key = strcmp(k, "cacertfile") == 0 || strcmp(k, "certfile") == 0 ||
                   strcmp(k, "keyfile") == 0 || strcmp(k, "verify") == 0;
    if (!tls_key)
        return bad(c, "unknown query parameter '%.32s'", k);
    if (!u->tls)
        return bad(c, "'%s' needs the amqps scheme", k);
    if (strcmp(k, "verify") == 0) {
        if (strcmp(v, "verify_peer") != 0 && strcmp(v, "verify_none") != 0)
            return bad(c, "verify must be verify_peer or verify_none");
        u->verify_peer = strcmp(v, "verify_peer") == 0;
        return MM_OK;
    }
    if (strcmp(k, "cacertfile") == 0)
        return set_string(v, &u->cacertfile);
    if (strcmp(k, "certfile") == 0)
        return set_string(v, &u->certfile);
    return set_string(v, &u->keyfile);
}

static int
parse_pair(struct cursor *c, const char *s, size_t len, struct mmi_uri *u)
{
    const char *eq = memchr(s, '=', len);
    if (eq == NULL)
        return bad(c, "query parameter without '='");
    char *k = NULL, *v = NULL;
    int rc = decode(c, s, (size_t) (eq - s), "query", &k);
    if (rc == MM_OK)
        rc = decode(c, eq + 1, len - (size_t) (eq + 1 - s), "query", &v);
    if (rc == MM_OK)
        rc = set_param(c, k, v, u);
    free(k);
    free(v);
    return rc;
}

static int
parse_query(struct cursor *c, const char *s, struct mmi_uri *u)
{
    while (*s != '\0') {
        const char *amp = strchr(s, '&');
        size_t len = amp ? (size_t) (amp - s) : strlen(s);
        if (len > 0) {
            int rc = parse_pair(c, s, len, u);
            if (rc != MM_OK)
                return rc;
        }
        s += len + (amp ? 1 : 0);
    }
    return MM_OK;
}

static int
parse_vhost(struct cursor *c, const char *s, size_t len, struct mmi_uri *u)
{
    if (memchr(s, '/', len) != NULL)
        return bad(c, "a '/' in the vhost must be written %%2F");
    return decode(c, s, len, "vhost", &u->vhost);
}

static void
set_defaults(struct mmi_uri *u)
{
    *u = (struct mmi_uri){
        .heartbeat = MMI_URI_HEARTBEAT_DEFAULT,
        .frame_max = MMI_URI_FRAME_MAX_DEFAULT,
        .verify_peer = true,
    };
}

static bool
memory_char_ok(char ch)
{
    return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
           ch == '.' || ch == '_' || ch == '-' || ch == ':';
}

/* memory://NAME: a name like a service name, nothing after it (no user,
 * port, path or query: a typo there must not pass for part of the name). */
static int
parse_memory(struct cursor *c, const char *name, struct mmi_uri *u)
{
    size_t n = strlen(name);
    if (n == 0)
        return bad(c, "memory:// needs a broker name (memory://NAME)");
    if (n > MMI_URI_MEMORY_MAX)
        return bad(c, "memory broker name is %zu characters (max %d)", n, MMI_URI_MEMORY_MAX);
    for (size_t i = 0; i < n; i++)
        if (!memory_char_ok(name[i]))
            return bad(c,
                       "memory broker name has '%c' at %zu (allowed: A-Z a-z 0-9 . _ - :; "
                       "no user, port, path or query)",
                       name[i] > 32 && name[i] < 127 ? name[i] : '?', i);
    if (name[0] == '.' || name[n - 1] == '.' || strstr(name, "..") != NULL)
        return bad(c, "memory broker name has an empty dot-separated part");
    u->memory = strdup(name);
    return u->memory ? MM_OK : MM_ENOMEM;
}

int
mmi_uri_parse(const char *s, struct mmi_uri *u, char *err, size_t errlen)
{
    struct cursor c = {.err = err, .errlen = errlen};
    const char *p = NULL;
    set_defaults(u);
    if (errlen > 0)
        err[0] = '\0';
    if (s == NULL)
        return bad(&c, "no URI");
    if (strncasecmp(s, "memory://", 9) == 0)
        return parse_memory(&c, s + 9, u);
    int rc = parse_scheme(&c, s, u, &p);
    if (rc != MM_OK)
        return rc;
    size_t alen = strcspn(p, "/?");
    rc = parse_authority(&c, p, alen, u);
    if (rc != MM_OK)
        return rc;
    p += alen;
    if (*p == '/') {
        size_t vlen = strcspn(p + 1, "?");
        rc = parse_vhost(&c, p + 1, vlen, u);
        p += 1 + vlen;
    } else {
        rc = set_string("/", &u->vhost);
    }
    if (rc == MM_OK && *p == '?')
        rc = parse_query(&c, p + 1, u);
    if (rc == MM_OK && u->port == 0)
        u->port = u->tls ? 5671 : 5672;
    return rc;
}

void
mmi_uri_free(struct mmi_uri *u)
{
    if (u == NULL)
        return;
    free(u->user);
    free(u->pass);
    free(u->host);
    free(u->vhost);
    free(u->cacertfile);
    free(u->certfile);
    free(u->keyfile);
    free(u->memory);
    set_defaults(u);
}

/* Append s percent-encoded, leaving only unreserved characters as they are. */
static size_t
append_encoded(char *out, size_t w, size_t cap, const char *s)
{
    static const char hex[] = "0123456789ABCDEF";
    for (; *s != '\0' && w + 4 < cap; s++) {
        unsigned char ch = (unsigned char) *s;
        if (isalnum(ch) || ch == '-' || ch == '.' || ch == '_' || ch == '~') {
            out[w++] = (char) ch;
        } else {
            out[w++] = '%';
            out[w++] = hex[ch >> 4];
            out[w++] = hex[ch & 15];
        }
    }
    out[w] = '\0';
    return w;
}

static char *
redact_memory(const struct mmi_uri *u)
{
    size_t cap = strlen(u->memory) + 10;
    char *out = malloc(cap);
    if (out != NULL)
        snprintf(out, cap, "memory://%s", u->memory);
    return out;
}

char *
mmi_uri_redact(const struct mmi_uri *u)
{
    if (u->memory != NULL)
        return redact_memory(u);
    const char *user = u->user ? u->user : "", *host = u->host ? u->host : "";
    const char *vhost = u->vhost ? u->vhost : "/";
    bool v6 = strchr(host, ':') != NULL;
    size_t cap = (strlen(user) + strlen(host) + strlen(vhost)) * 3 + 48;
    char *out = malloc(cap);
    if (out == NULL)
        return NULL;
    size_t w = (size_t) snprintf(out, cap, "%s://", u->tls ? "amqps" : "amqp");
    w = append_encoded(out, w, cap, user);
    w += (size_t) snprintf(out + w, cap - w, ":***@%s", v6 ? "[" : "");
    w = v6 ? w + (size_t) snprintf(out + w, cap - w, "%s]", host)
           : append_encoded(out, w, cap, host);
    w += (size_t) snprintf(out + w, cap - w, ":%d/", u->port);
    append_encoded(out, w, cap, vhost);
    return out;
}
