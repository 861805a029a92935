# Decides KVTIER_WITH_CUDA from KVTIER_CUDA (AUTO/ON/OFF) and enables the CUDA
# language for sm_80 and sm_90 when on. CUDA code compiles everywhere nvcc
# exists; its tests skip at run time when no GPU is present.
set(KVTIER_WITH_CUDA OFF)
if(NOT KVTIER_CUDA STREQUAL "OFF")
  include(CheckLanguage)
  check_language(CUDA)
  if(CMAKE_CUDA_COMPILER)
    if(NOT DEFINED CMAKE_CUDA_ARCHITECTURES)
      set(CMAKE_CUDA_ARCHITECTURES 80 90)
    endif()
    enable_language(CUDA)
    find_package(CUDAToolkit REQUIRED)
    # CMake 3.25 does not know that nvcc 13 accepts C++20, so CUDA code is C++17.
    set(CMAKE_CUDA_STANDARD 17)
    set(CMAKE_CUDA_STANDARD_REQUIRED ON)
    set(KVTIER_WITH_CUDA ON)
  elseif(KVTIER_CUDA STREQUAL "ON")
    message(FATAL_ERROR "KVTIER_CUDA=ON but no CUDA compiler (nvcc) was found")
  endif()
endif()
message(STATUS "kvtier: CUDA kernels ${KVTIER_WITH_CUDA}")
