/* A shared library that carries memlimits' identification text with a version no launcher of
 * this build accepts: the launcher must refuse it as MEMLIMIT_LIBRARY (an old or future
 * libmemlimits.so), without loading it. */
__attribute__((used)) const char launcher_foreign_ident[] = "memlimits-library-ident 99.0.0";

int launcher_foreign_function(void);

int launcher_foreign_function(void)
{
    return 1;
}
