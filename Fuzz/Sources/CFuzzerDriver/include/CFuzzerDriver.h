// libFuzzer's entry points (compiler-rt lib/fuzzer/FuzzerInterface.h) for
// the Swift fuzz targets. SwiftPM links an executable with `main` defined as
// `<module>_main`, which hides the `main` libFuzzer's runtime would provide;
// each target's `<module>_main` calls `pvh_fuzz_main`, which runs
// libFuzzer's driver on the target's `LLVMFuzzerTestOneInput`.
#ifndef PVH_CFUZZERDRIVER_H
#define PVH_CFUZZERDRIVER_H
#include <stddef.h>
#include <stdint.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerRunDriver(int *argc, char ***argv, int (*callback)(const uint8_t *data, size_t size));

/// The process's `main`: libFuzzer with the process's arguments.
int pvh_fuzz_main(int argc, char **argv);
#endif
