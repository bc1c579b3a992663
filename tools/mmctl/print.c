/*
 * What mmctl prints: messages (a body as JSON text, or with --json one
 * object per line with the message's route, ids and headers), error lines
 * and the readiness line, and the mapping of micromsg's codes to exit codes.
 */
#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

#include "mmctl.h"

void
mmctl_print_json(json_t *j)
{
    char *s = j != NULL ? json_dumps(j, JSON_COMPACT | JSON_ENCODE_ANY) : NULL;
    if (s != NULL)
        printf("%s\n", s);
    else
        printf("null\n");
    fflush(stdout); /* a line at a time: mmctl is read through pipes */
    free(s);
    json_decref(j);
}

static const char *
kind_name(mm_msg_kind k)
{
    switch (k) {
    case MM_MSG_REQUEST:
        return "request";
    case MM_MSG_TASK:
        return "task";
    case MM_MSG_EVENT:
        return "event";
    default:
        return "answer";
    }
}

/* The --json form of a message. */
static json_t *
msg_json(mm_msg_t *msg, uint64_t n)
{
    json_t *j = json_object();
    if (j == NULL)
        return NULL;
    if (n > 0)
        json_object_set_new(j, "n", json_integer((json_int_t) n));
    json_object_set_new(j, "kind", json_string(kind_name(mm_msg_kind_of(msg))));
    /* an answer has no route, an event no request id: leave out what is empty */
    if (mm_msg_route(msg)[0] != '\0')
        json_object_set_new(j, "route", json_string(mm_msg_route(msg)));
    if (mm_msg_request_id(msg)[0] != '\0')
        json_object_set_new(j, "requestId", json_string(mm_msg_request_id(msg)));
    json_object_set_new(j, "headers", mmctl_json_of(mm_msg_headers(msg)));
    json_object_set_new(j, "body", mmctl_json_of(mm_msg_body(msg)));
    if (mm_msg_redelivered(msg))
        json_object_set_new(j, "redelivered", json_true());
    return j;
}

void
mmctl_print_msg(const struct mmctl_args *a, mm_msg_t *msg, uint64_t n)
{
    if (a->json) {
        mmctl_print_json(msg_json(msg, n));
        return;
    }
    if (n > 0)
        printf("[#%llu] %s ", (unsigned long long) n, mm_msg_route(msg));
    mmctl_print_json(mmctl_json_of(mm_msg_body(msg)));
}

void
mmctl_err(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("mmctl: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
}

void
mmctl_ready(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("mmctl: ready: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
}

int
mmctl_exit_of(int status)
{
    switch (status) {
    case MM_OK:
        return MMCTL_EXIT_OK;
    case MM_EREMOTE:
        return MMCTL_EXIT_REMOTE;
    case MM_ETIMEDOUT:
        return MMCTL_EXIT_TIMEOUT;
    case MM_ENOROUTE:
    case MM_ENOENT:
        return MMCTL_EXIT_NOROUTE;
    case MM_ENAME:
    case MM_EURI:
        return MMCTL_EXIT_USAGE;
    case MM_EUNREACHABLE:
    case MM_EAUTH:
    case MM_EVHOST:
    case MM_ETLS:
        return MMCTL_EXIT_UNREACHABLE;
    default:
        return MMCTL_EXIT_FAIL;
    }
}
