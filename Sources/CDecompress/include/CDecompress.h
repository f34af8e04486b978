#ifndef PVH_CDECOMPRESS_H
#define PVH_CDECOMPRESS_H
#include <stdint.h>
#include <stddef.h>
#endif
