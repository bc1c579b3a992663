/*
 * Bodies given on the command line: JSON text (or "-" for JSON read from
 * stdin) packed as one msgpack object, or with --raw the bytes themselves
 * sent as a msgpack bin (application/octet-stream on the wire).
 */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mmctl.h"

/* All of stdin into a new NUL-terminated buffer; NULL on a read error or no memory. */
static char *
read_stdin(size_t *ret_len)
{
    size_t cap = 4096, len = 0;
    char *buf = malloc(cap);
    while (buf != NULL) {
        len += fread(buf + len, 1, cap - len - 1, stdin);
        if (ferror(stdin)) {
            free(buf);
            return NULL;
        }
        if (feof(stdin))
            break;
        char *bigger = len + 1 >= cap ? realloc(buf, cap *= 2) : buf;
        if (bigger == NULL)
            free(buf);
        buf = bigger;
    }
    if (buf != NULL)
        buf[len] = '\0';
    *ret_len = len;
    return buf;
}

/* Pack text (len bytes) as JSON, or as bin with --raw. */
static int
pack_text(const struct mmctl_args *a, const char *text, size_t len, mm_body_t *b)
{
    if (a->raw)
        return mm_body_bin(b, text, len) == MM_OK ? MMCTL_EXIT_OK : MMCTL_EXIT_FAIL;
    json_error_t e;
    json_t *j = json_loadb(text, len, JSON_DECODE_ANY | JSON_ALLOW_NUL, &e);
    if (j == NULL) {
        mmctl_err("invalid JSON body: %s (line %d, column %d)", e.text, e.line, e.column);
        return MMCTL_EXIT_BODY;
    }
    int rc = mmctl_json_pack(mm_body_packer(b), j);
    json_decref(j);
    return rc == 0 ? MMCTL_EXIT_OK : MMCTL_EXIT_FAIL;
}

int
mmctl_body(const struct mmctl_args *a, const char *arg, mm_body_t **ret)
{
    *ret = NULL;
    if (arg == NULL)
        return MMCTL_EXIT_OK;
    size_t len = strlen(arg);
    char *in = NULL;
    if (strcmp(arg, "-") == 0 && (in = read_stdin(&len)) == NULL) {
        mmctl_err("cannot read the body from stdin");
        return MMCTL_EXIT_FAIL;
    }
    mm_body_t *b = mm_body_new();
    int rc = b != NULL ? pack_text(a, in != NULL ? in : arg, len, b) : MMCTL_EXIT_FAIL;
    free(in);
    if (rc != MMCTL_EXIT_OK) {
        if (rc == MMCTL_EXIT_FAIL)
            mmctl_err("out of memory");
        mm_body_free(b);
        return rc;
    }
    *ret = b;
    return MMCTL_EXIT_OK;
}
