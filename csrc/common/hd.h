// POSERT_HD: functions shared by the C++ kernels and their CUDA twins (host + device under nvcc).
#pragma once

#if defined(__CUDACC__)
#define POSERT_HD __host__ __device__
#else
#define POSERT_HD
#endif
