/* The part of <stdlib.h> that wit-bindgen's C output and the sonde C SDK
 * use, for a freestanding wasm32 build with no libc (so no WASI). The
 * functions are defined in sonde_alloc.c. */
#ifndef SONDE_LIBC_STDLIB_H
#define SONDE_LIBC_STDLIB_H
#include <stddef.h>

void *malloc(size_t size);
void *calloc(size_t count, size_t size);
void *realloc(void *ptr, size_t size);
void free(void *ptr);
_Noreturn void abort(void);

#endif
