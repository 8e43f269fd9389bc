// The -march this library was compiled with (JSAE_MARCH, set by jsae/kernels/build.py),
// read by jsae/kernels/load.py through ctypes: which variant is loaded, and whether it is
// the baseline (then a faster variant may be chosen for this CPU) or a requested target.
#ifndef JSAE_MARCH
#define JSAE_MARCH "unknown"
#endif
extern "C" const char JsaeKernelsMarch[] = JSAE_MARCH;
