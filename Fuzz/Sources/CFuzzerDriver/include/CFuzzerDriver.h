// libFuzzer's driver entry (compiler-rt lib/fuzzer/FuzzerInterface.h,
// LLVMFuzzerRunDriver), declared for the Swift fuzz targets. SwiftPM links
// an executable with `main` defined as `<module>_main`, which hides the
// `main` libFuzzer's runtime would otherwise provide, so each target's
// `<module>_main` hands its argv and its one-input callback to this.
#ifndef PVH_CFUZZERDRIVER_H
#define PVH_CFUZZERDRIVER_H
#include <stddef.h>
#include <stdint.h>

typedef int (*pvh_fuzz_callback)(const uint8_t *data, size_t size);

int LLVMFuzzerRunDriver(int *argc, char ***argv, pvh_fuzz_callback callback);

/// Runs libFuzzer with the process's arguments and one target's callback.
static inline int pvh_fuzz_main(int argc, char **argv, pvh_fuzz_callback callback) {
    return LLVMFuzzerRunDriver(&argc, &argv, callback);
}
#endif
