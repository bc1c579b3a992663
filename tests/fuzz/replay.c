/* Runs a fuzz target over a corpus (files or directories given as arguments),
 * so that every build, gcc without libFuzzer included, exercises the corpus;
 * the sanitizer build catches what the target itself does not check. */
#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int
replay_file(const char *path)
{
    static uint8_t buf[1 << 16];
    FILE *f = fopen(path, "rb");
    if (f == NULL) {
        perror(path);
        return 1;
    }
    size_t n = fread(buf, 1, sizeof buf, f);
    fclose(f);
    LLVMFuzzerTestOneInput(buf, n);
    return 0;
}

/* Returns the number of inputs run; *failed counts unreadable ones. */
static int
replay(const char *path, int *failed)
{
    DIR *d = opendir(path);
    if (d == NULL) {
        *failed += replay_file(path);
        return 1;
    }
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.')
            continue;
        char sub[4096];
        snprintf(sub, sizeof sub, "%s/%s", path, e->d_name);
        n += replay(sub, failed);
    }
    closedir(d);
    return n;
}

int
main(int argc, char **argv)
{
    int failed = 0, total = 0;
    for (int i = 1; i < argc; i++)
        total += replay(argv[i], &failed);
    printf("%d passed, %d failed\n", total - failed, failed);
    return failed == 0 && total > 0 ? 0 : 1;
}
