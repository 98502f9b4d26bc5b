#ifndef NOTIFY_CFUZZER_H
#define NOTIFY_CFUZZER_H
#include <stddef.h>
#include <stdint.h>

/// libFuzzer's entry point for programs with their own main (linked only
/// when built with -sanitize=fuzzer).
int LLVMFuzzerRunDriver(int *argc, char ***argv, int (*callback)(const uint8_t *data, size_t size));
#endif
