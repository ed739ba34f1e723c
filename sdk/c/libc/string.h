/* The part of <string.h> that wit-bindgen's C output and the sonde C SDK
 * use (no libc: defined in sonde_alloc.c). */
#ifndef SONDE_LIBC_STRING_H
#define SONDE_LIBC_STRING_H
#include <stddef.h>

void *memcpy(void *restrict dst, const void *restrict src, size_t n);
void *memmove(void *dst, const void *src, size_t n);
void *memset(void *dst, int c, size_t n);
int memcmp(const void *a, const void *b, size_t n);
size_t strlen(const char *s);

#endif
