/* A small allocator and the few libc functions a sonde C collector needs,
 * for wasm32 with no libc (a libc would bring WASI imports, which the host
 * refuses).
 *
 * Blocks come in power-of-two size classes from 16 bytes to 64 KiB, each
 * class with its own free list; larger blocks are whole multiples of 64 KiB
 * pages, kept on one first-fit free list. Every block is preceded by an
 * 8-byte header holding its capacity. Memory is taken from the end of the
 * heap with `memory.grow` and never returned: the host's `memory_mb` limit
 * bounds it, and a refused grow makes malloc return NULL. A collector keeps
 * a few counters between calls, so this is plenty. */

#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define HEADER 8u
#define MIN_SHIFT 4u   /* 16 bytes */
#define MAX_SHIFT 16u  /* 64 KiB */
#define CLASSES (MAX_SHIFT - MIN_SHIFT + 1u)
#define PAGE 65536u

extern unsigned char __heap_base;

typedef struct free_block {
    struct free_block *next;
} free_block;

typedef struct large_block {
    size_t capacity;          /* the header: bytes after it */
    struct large_block *next; /* while free */
} large_block;

static uintptr_t heap_top;    /* first unused byte */
static uintptr_t heap_end;    /* end of linear memory */
static free_block *free_lists[CLASSES];
static large_block *free_large;

/* Takes `size` bytes (a multiple of 8) from the top of the heap. */
static void *take(size_t size) {
    if (heap_top == 0) {
        heap_top = ((uintptr_t)&__heap_base + 7u) & ~(uintptr_t)7u;
        heap_end = __builtin_wasm_memory_size(0) * PAGE;
    }
    if (size > SIZE_MAX - heap_top) return NULL;
    uintptr_t need = heap_top + size;
    if (need > heap_end) {
        size_t pages = (need - heap_end + PAGE - 1u) / PAGE;
        if (__builtin_wasm_memory_grow(0, pages) == (size_t)-1) return NULL;
        heap_end += pages * PAGE;
    }
    void *p = (void *)heap_top;
    heap_top = need;
    return p;
}

static unsigned class_of(size_t size) {
    unsigned shift = MIN_SHIFT;
    while (((size_t)1 << shift) < size) shift++;
    return shift - MIN_SHIFT;
}

static size_t capacity_of(void *ptr) {
    return *(size_t *)((unsigned char *)ptr - HEADER);
}

void *malloc(size_t size) {
    if (size == 0) size = 1;
    if (size <= ((size_t)1 << MAX_SHIFT)) {
        unsigned c = class_of(size);
        size_t cap = (size_t)1 << (c + MIN_SHIFT);
        free_block *b = free_lists[c];
        if (b != NULL) {
            free_lists[c] = b->next;
            return b;
        }
        unsigned char *p = take(HEADER + cap);
        if (p == NULL) return NULL;
        *(size_t *)p = cap;
        return p + HEADER;
    }
    if (size > SIZE_MAX - PAGE) return NULL;
    size_t cap = (size + PAGE - 1u) / PAGE * PAGE;
    for (large_block **at = &free_large; *at != NULL; at = &(*at)->next) {
        large_block *b = *at;
        if (b->capacity >= cap) {
            *at = b->next;
            return (unsigned char *)b + HEADER;
        }
    }
    unsigned char *p = take(HEADER + cap);
    if (p == NULL) return NULL;
    *(size_t *)p = cap;
    return p + HEADER;
}

void free(void *ptr) {
    if (ptr == NULL) return;
    size_t cap = capacity_of(ptr);
    if (cap <= ((size_t)1 << MAX_SHIFT)) {
        unsigned c = class_of(cap);
        free_block *b = ptr;
        b->next = free_lists[c];
        free_lists[c] = b;
        return;
    }
    large_block *b = (large_block *)((unsigned char *)ptr - HEADER);
    b->next = free_large;
    free_large = b;
}

void *calloc(size_t count, size_t size) {
    if (size != 0 && count > SIZE_MAX / size) return NULL;
    void *p = malloc(count * size);
    if (p != NULL) memset(p, 0, count * size);
    return p;
}

void *realloc(void *ptr, size_t size) {
    if (ptr == NULL) return malloc(size);
    size_t cap = capacity_of(ptr);
    if (size <= cap) return ptr;
    void *p = malloc(size);
    if (p == NULL) return NULL;
    memcpy(p, ptr, cap);
    free(ptr);
    return p;
}

_Noreturn void abort(void) {
    __builtin_trap();
}

void *memcpy(void *restrict dst, const void *restrict src, size_t n) {
    unsigned char *d = dst;
    const unsigned char *s = src;
    while (n--) *d++ = *s++;
    return dst;
}

void *memmove(void *dst, const void *src, size_t n) {
    unsigned char *d = dst;
    const unsigned char *s = src;
    if (d < s) {
        while (n--) *d++ = *s++;
    } else {
        while (n--) d[n] = s[n];
    }
    return dst;
}

void *memset(void *dst, int c, size_t n) {
    unsigned char *d = dst;
    while (n--) *d++ = (unsigned char)c;
    return dst;
}

int memcmp(const void *a, const void *b, size_t n) {
    const unsigned char *x = a, *y = b;
    for (; n--; x++, y++) {
        if (*x != *y) return *x < *y ? -1 : 1;
    }
    return 0;
}

size_t strlen(const char *s) {
    const char *p = s;
    while (*p) p++;
    return (size_t)(p - s);
}
