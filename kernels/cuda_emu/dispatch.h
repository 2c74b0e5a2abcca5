// dispatch.h: the launch entry point of the emulation, called from Rust.
//
// Arguments arrive as CUDA's driver API passes them to cuLaunchKernel: `args[i]` points to
// the value of parameter i (for a pointer parameter, to a variable holding the pointer). Each
// kernel's parameter types are encoded as a signature string (one letter per parameter, see
// VpSig below) that the caller must match exactly, so a Rust call whose arguments do not fit
// the kernel's C++ parameter list is an error here rather than undefined behaviour.

#pragma once

#include "shim.h"

#include <cstddef>
#include <string>
#include <type_traits>
#include <utility>

template <typename T>
struct VpSig;  // no definition: a parameter type without a letter does not compile
template <> struct VpSig<int> { static constexpr char c = 'i'; };
template <> struct VpSig<long long> { static constexpr char c = 'l'; };
template <> struct VpSig<float> { static constexpr char c = 'f'; };
template <> struct VpSig<const float*> { static constexpr char c = 'F'; };
template <> struct VpSig<float*> { static constexpr char c = 'G'; };
template <> struct VpSig<const unsigned char*> { static constexpr char c = 'B'; };
template <> struct VpSig<const int*> { static constexpr char c = 'I'; };
template <> struct VpSig<int*> { static constexpr char c = 'J'; };
template <> struct VpSig<const long long*> { static constexpr char c = 'L'; };
template <> struct VpSig<long long*> { static constexpr char c = 'M'; };
template <> struct VpSig<unsigned long long*> { static constexpr char c = 'U'; };

template <typename... A>
struct VpInvoker {
  static std::string signature() { return std::string{VpSig<std::remove_cv_t<A>>::c...}; }
  template <std::size_t... I>
  static void call(void (*f)(A...), void** args, std::index_sequence<I...>) {
    f(*static_cast<std::remove_cv_t<A>*>(args[I])...);
  }
};

template <typename... A>
std::string vp_signature(void (*)(A...)) {
  return VpInvoker<A...>::signature();
}

template <typename... A>
void vp_call(void (*f)(A...), void** args) {
  VpInvoker<A...>::call(f, args, std::index_sequence_for<A...>{});
}

struct VpKernelEntry {
  const char* name;
  const char* file;
  bool cooperative;  // the kernel's .cu file uses __syncthreads: run threads as fibers
  std::string (*signature)();
  void (*call)(void** args);
};

#define VP_KERNEL(name, file, cooperative)                    \
  VpKernelEntry {                                             \
    #name, file, cooperative, []() { return vp_signature(&name); }, \
        [](void** a) { vp_call(&name, a); }                   \
  }
