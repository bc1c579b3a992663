/*
 * mmctl: talk to micromsg services from the command line, in the manner of
 * the `nats` CLI. This file holds the verb table, the usage texts and main:
 * the command line is parsed (args.c), then the verb runs and its return is
 * the exit code.
 */
#include <stdio.h>
#include <string.h>

#include "mmctl.h"

static const struct mmctl_verb verbs[] = {
    {"request", mmctl_request, 2, 3, MMCTL_F_RAW, "request SERVICE ROUTE [BODY] [--raw]",
     "Send a request and print the answer's body (a streamed answer: one line per part)."},
    {"reply", mmctl_reply, 2, 3, MMCTL_F_RAW | MMCTL_F_ECHO | MMCTL_F_COUNT,
     "reply SERVICE ROUTE [BODY] [--echo] [--raw] [--count N]",
     "Serve a route: answer every request with BODY (none: an empty answer), or with the\n"
     "request's own body (--echo); one line per request served. Runs until Ctrl-C or N served."},
    {"emit", mmctl_emit, 2, 3, MMCTL_F_RAW | MMCTL_F_COUNT,
     "emit TARGET ROUTE [BODY] [--raw] [--count N]",
     "Emit an event (N times) to TARGET.ROUTE and wait for the broker's confirms."},
    {"listen", mmctl_listen, 2, 2, MMCTL_F_COUNT, "listen TARGET ROUTE [--count N]",
     "Print the events of TARGET.ROUTE (wildcards: * one word, # any), one line each\n"
     "(\"[#n] ROUTE BODY\"; --json: an object with the route, headers and body)."},
    {"task", mmctl_task, 2, 3, MMCTL_F_RAW | MMCTL_F_COUNT,
     "task SERVICE ROUTE [BODY] [--raw] [--count N]",
     "Queue a task (N times) and wait for the broker's confirms; exit 4 when no queue\n"
     "exists for the route (nobody ever handled it)."},
    {"work", mmctl_work, 2, 2, MMCTL_F_COUNT, "work SERVICE ROUTE [--count N]",
     "Take tasks of SERVICE.ROUTE, print and ack them (a request there gets an empty\n"
     "answer). Runs until Ctrl-C or N taken."},
    {"stat", mmctl_stat, 2, 2, 0, "stat SERVICE ROUTE",
     "Print the messages ready in the route's request queue and its consumers;\n"
     "exit 4 when the queue does not exist."},
    {"status", mmctl_status, 1, 1, 0, "status SERVICE",
     "Print the members of a service (id, ready, leader, uptime, memory, peers they know, and\n"
     "QoS: level and pressure of members running it, - for others); exit 4 when no instance\n"
     "answered. --json: one object per member."},
    {"leader", mmctl_leader, 1, 1, 0, "leader SERVICE",
     "Wait (--timeout, default 5000 ms) for the service's leader and print its id;\n"
     "exit 3 when there is none in time."},
    {"bench", mmctl_bench, 0, 1, MMCTL_F_COUNT, "bench [SCENARIO,...] [--count ROUNDS]",
     "The benchmark's quick run against the broker: micromsg and raw rabbitmq-c alternating\n"
     "(3 rounds of short runs, about 15 s), then a Markdown table of medians, micromsg/raw\n"
     "ratios and targets. Scenarios: rpc1 rpc16 rpc128 events tasks ptasks qos rpc1h rpc16h\n"
     "eventsh ptasksh (default: all). bench/RESULTS.md explains the figures."},
    {"join", mmctl_join, 1, 1, MMCTL_F_COUNT, "join SERVICE [--count N]",
     "Run an instance of SERVICE that takes part in the election and print every change of\n"
     "leader (\"leader: ID\", \"stepUp: ID\" when it leads). Until Ctrl-C or N changes."},
    {"topic-declare", mmctl_topic_declare, 1, 1, MMCTL_F_MAX_AGE | MMCTL_F_MAX_BYTES,
     "topic-declare TOPIC [--max-age SECONDS] [--max-bytes N]",
     "Declare a topic: a log of records kept on the broker (a RabbitMQ stream) that readers\n"
     "replay at their own pace. Retention: records older than SECONDS, or beyond N bytes in\n"
     "all, may be removed (default: no bound). Declaring it again with other retention fails."},
    {"topic-publish", mmctl_topic_publish, 2, 3, MMCTL_F_RAW | MMCTL_F_COUNT,
     "topic-publish TOPIC TYPE [BODY] [--raw] [--count N]",
     "Append a record of event TYPE to TOPIC (N times) and wait for the broker's confirms;\n"
     "exit 4 when the topic does not exist."},
    {"topic-read", mmctl_topic_read, 2, 2, MMCTL_F_FROM | MMCTL_F_COUNT,
     "topic-read TOPIC CONSUMER [--from first|last|next|OFFSET|@MS] [--count N]",
     "Read TOPIC as CONSUMER and print each record (\"[OFFSET] TYPE BODY\"; --json: an object\n"
     "with the offset, type, id, sender, timestamp, causation id, traceparent, headers and\n"
     "body), until Ctrl-C or N records. --from: the first record kept, the last chunk, only new\n"
     "records, an offset, or @ms since the epoch; default: after CONSUMER's stored cursor, else\n"
     "the first. The cursor is stored at the end: the next read of CONSUMER resumes after it.\n"
     "One process reads a consumer at a time (mmctl's own, service \"mmctl\"); the others\n"
     "wait (\"mmctl: standby: ...\"). Exit 4 when the topic does not exist."},
    {"topic-delete", mmctl_topic_delete, 1, 1, 0, "topic-delete TOPIC",
     "Delete a topic and its records; exit 4 when it does not exist."},
};

#define N_VERBS (sizeof verbs / sizeof verbs[0])

static const struct mmctl_verb *
find_verb(const char *name)
{
    for (size_t i = 0; i < N_VERBS; i++) {
        if (strcmp(verbs[i].name, name) == 0)
            return &verbs[i];
    }
    return NULL;
}

static const char global_help[] =
    "Global options (before or after the verb):\n"
    "  --uri URI         broker (default: $MM_URI, $RABBITMQ_URI, amqp://localhost:5672,\n"
    "                    user guest)\n"
    "  --json            machine-readable output: one JSON object per line\n"
    "  --codec C         wire encoding of what is sent: msgpack (default) or json\n"
    "  --timeout MS      request timeout (default: the library's, 120000); the wait of\n"
    "                    leader (5000) and of the confirms of emit, task and\n"
    "                    topic-publish (10000)\n"
    "  -v, -vv           library logs (info, debug) on stderr\n"
    "  -h, --help        this text, or the verb's\n"
    "\n"
    "Bodies: JSON text, packed as msgpack (\"-\": read from stdin); --raw sends the\n"
    "argument's bytes as a msgpack bin. Bodies are printed as JSON; a bin (or a string\n"
    "that is not UTF-8) as {\"$bin\": \"<base64>\"}, an ext as {\"$ext\": T, \"$bin\": ...}.\n"
    "Serving verbs (reply, listen, work, join, topic-read) print \"mmctl: ready: ...\"\n"
    "on stderr once they consume.\n"
    "\n"
    "Exit codes:\n"
    "  0  ok                    3  timeout (no answer, no leader)\n"
    "  1  other failure         4  no route: nobody handles it, unroutable, no queue,\n"
    "                               no topic\n"
    "  2  remote error          64 usage: unknown verb or option, missing argument\n"
    "  65 invalid body (bad JSON)   69 broker unreachable (connect failed)\n";

static void
usage(FILE *f)
{
    fprintf(f, "usage: mmctl VERB [ARGS] [OPTIONS]\n\nVerbs:\n");
    for (size_t i = 0; i < N_VERBS; i++)
        fprintf(f, "  %s\n", verbs[i].synopsis);
    fprintf(f, "\n%s", global_help);
}

static void
verb_usage(const struct mmctl_verb *v)
{
    printf("usage: mmctl %s\n\n%s\n\n%s", v->synopsis, v->help, global_help);
}

int
main(int argc, char **argv)
{
    if (argc > 1 && strcmp(argv[1], mmctl_bench_role_verb()) == 0)
        return mmctl_bench_role(argc, argv); /* a process of `mmctl bench` */
    struct mmctl_args a;
    int rc = mmctl_parse(argc, argv, &a, find_verb);
    if (rc != MMCTL_EXIT_OK)
        return rc;
    if (a.verb == NULL) {
        usage(a.help ? stdout : stderr);
        return a.help ? MMCTL_EXIT_OK : MMCTL_EXIT_USAGE;
    }
    const struct mmctl_verb *v = find_verb(a.verb);
    if (a.help) {
        verb_usage(v);
        return MMCTL_EXIT_OK;
    }
    return v->run(&a);
}
