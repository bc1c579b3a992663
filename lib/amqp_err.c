/*
 * rabbitmq-c's three ways of failing (negative amqp_status_enum, an
 * amqp_rpc_reply_t, a channel/connection close from the broker) translated
 * once into MM_E* codes plus a text. Nothing of rabbitmq-c's error types
 * leaves this file.
 */
#include <stdio.h>
#include <string.h>

#include "internal.h"

int
mmi_err_from_status(int st)
{
    switch (st) {
    case AMQP_STATUS_OK:
        return MM_OK;
    case AMQP_STATUS_NO_MEMORY:
        return MM_ENOMEM;
    case AMQP_STATUS_TIMEOUT:
    case AMQP_STATUS_HEARTBEAT_TIMEOUT:
        return MM_ETIMEDOUT;
    case AMQP_STATUS_HOSTNAME_RESOLUTION_FAILED:
    case AMQP_STATUS_SOCKET_ERROR:
    case AMQP_STATUS_TCP_ERROR:
        return MM_EUNREACHABLE;
    case AMQP_STATUS_CONNECTION_CLOSED:
    case AMQP_STATUS_SOCKET_CLOSED:
        return MM_EDISCONNECTED;
    case AMQP_STATUS_BAD_AMQP_DATA:
    case AMQP_STATUS_UNKNOWN_CLASS:
    case AMQP_STATUS_UNKNOWN_METHOD:
    case AMQP_STATUS_INCOMPATIBLE_AMQP_VERSION:
    case AMQP_STATUS_UNEXPECTED_STATE:
    case AMQP_STATUS_WRONG_METHOD:
        return MM_EPROTO;
    case AMQP_STATUS_INVALID_PARAMETER:
    case AMQP_STATUS_TABLE_TOO_BIG:
        return MM_EINVAL;
    default:
        break;
    }
    if (st <= AMQP_STATUS_SSL_ERROR && st > _AMQP_STATUS_SSL_NEXT_VALUE)
        return MM_ETLS;
    return MM_EPROTO;
}

/* AMQP reply codes of channel.close / connection.close. */
int
mmi_err_from_close(uint16_t reply_code)
{
    switch (reply_code) {
    case 403: /* ACCESS_REFUSED */
        return MM_EAUTH;
    case 530: /* NOT_ALLOWED: e.g. a vhost the user may not open */
        return MM_EVHOST;
    case 320: /* CONNECTION_FORCED */
        return MM_EDISCONNECTED;
    case 404: /* NOT_FOUND */
    case 405: /* RESOURCE_LOCKED */
    case 406: /* PRECONDITION_FAILED */
        return MM_ECHANNEL;
    case 501: /* FRAME_ERROR */
    case 502: /* SYNTAX_ERROR */
    case 503: /* COMMAND_INVALID */
    case 504: /* CHANNEL_ERROR */
    case 505: /* UNEXPECTED_FRAME */
    case 540: /* NOT_IMPLEMENTED */
        return MM_EPROTO;
    default:
        return MM_EBROKER;
    }
}

static int
close_text(char *text, size_t len, const char *what, uint16_t code, amqp_bytes_t reply)
{
    snprintf(text, len, "%s %u: %.*s", what, code, (int) reply.len, (const char *) reply.bytes);
    return MM_OK;
}

int
mmi_err_from_reply(amqp_rpc_reply_t r, char *text, size_t len)
{
    switch (r.reply_type) {
    case AMQP_RESPONSE_NORMAL:
        snprintf(text, len, "ok");
        return MM_OK;
    case AMQP_RESPONSE_NONE:
        snprintf(text, len, "no reply from the broker");
        return MM_EPROTO;
    case AMQP_RESPONSE_LIBRARY_EXCEPTION:
        snprintf(text, len, "%s", amqp_error_string2(r.library_error));
        return mmi_err_from_status(r.library_error);
    case AMQP_RESPONSE_SERVER_EXCEPTION:
        break;
    }
    if (r.reply.id == AMQP_CONNECTION_CLOSE_METHOD) {
        const amqp_connection_close_t *c = r.reply.decoded;
        close_text(text, len, "broker closed the connection:", c->reply_code, c->reply_text);
        return mmi_err_from_close(c->reply_code);
    }
    if (r.reply.id == AMQP_CHANNEL_CLOSE_METHOD) {
        const amqp_channel_close_t *c = r.reply.decoded;
        close_text(text, len, "broker closed the channel:", c->reply_code, c->reply_text);
        return mmi_err_from_close(c->reply_code) == MM_EPROTO ? MM_EPROTO : MM_ECHANNEL;
    }
    snprintf(text, len, "unexpected method 0x%08x from the broker", r.reply.id);
    return MM_EPROTO;
}
