/* A host program that knows nothing of mpcore but a shared library that
 * holds it, and asks that library to start a child by each method.
 * tests/fresh_run.rs builds it twice:
 *
 * - plain, it loads the library with dlopen (argv[1]), as a plugin host
 *   or Python does;
 * - with -DLINKED, it is linked with the library, which the loader then
 *   loads at start-up, before main. */
#include <stdio.h>

#ifdef LINKED
int mpcore_tests_spawn(int method, char *out, size_t len);
#else
#include <dlfcn.h>
#endif

int main(int argc, char **argv) {
    printf("host main ran with %d arguments\n", argc);
    fflush(stdout);
#ifdef LINKED
    int (*spawn)(int, char *, size_t) = mpcore_tests_spawn;
#else
    if (argc < 2) {
        return 3;
    }
    void *library = dlopen(argv[1], RTLD_NOW | RTLD_LOCAL);
    if (library == NULL) {
        fprintf(stderr, "dlopen: %s\n", dlerror());
        return 4;
    }
    int (*spawn)(int, char *, size_t) =
        (int (*)(int, char *, size_t))dlsym(library, "mpcore_tests_spawn");
    if (spawn == NULL) {
        fprintf(stderr, "dlsym: %s\n", dlerror());
        return 5;
    }
#endif
    const char *methods[] = {"fork", "spawn", "forkserver"};
    for (int method = 0; method < 3; method++) {
        char text[1024];
        int code = spawn(method, text, sizeof text);
        printf("%s: %s: %s\n", methods[method], code == 0 ? "value" : "error", text);
        fflush(stdout);
    }
    return 0;
}
