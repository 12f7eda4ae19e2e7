/* Compiles include/wshub.h alone, as C99 and as C++17, with every warning an error. */
#include "wshub.h"

#if WSHUB_VERSION_MAJOR < 0 || WSHUB_VERSION_MINOR < 0 || WSHUB_VERSION_PATCH < 0
#error "version macros must be numbers"
#endif

const char *header_only_version(void);
const char *header_only_version(void) { return WSHUB_VERSION; }
