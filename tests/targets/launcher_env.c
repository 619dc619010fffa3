/* Prints what the launcher gave it: LD_PRELOAD, the marker the user's own preloaded library
 * sets (launcher_marker.c), whether memlimits owns malloc, and the variables named in argv. */
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>

static const char *or_unset(const char *value)
{
    return value != NULL ? value : "(unset)";
}

int main(int argc, char **argv)
{
    int (*active)(void) = (int (*)(void))dlsym(RTLD_DEFAULT, "ml_active");
    printf("LD_PRELOAD=%s\n", or_unset(getenv("LD_PRELOAD")));
    printf("ML_LAUNCHER_MARKER=%s\n", or_unset(getenv("ML_LAUNCHER_MARKER")));
    printf("ACTIVE=%d\n", active != NULL ? active() : -1);
    for (int i = 1; i < argc; i++)
        printf("%s=%s\n", argv[i], or_unset(getenv(argv[i])));
    return 0;
}
