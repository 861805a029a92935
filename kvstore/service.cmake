# The gRPC service, its config loader and the kvtier-server binary.
# Included once (from kvstore/CMakeLists.txt, below the store core); the
# guard makes a second include a no-op. Paths are relative to this file so it
# can be included from any directory.
include_guard(GLOBAL)

set(_svc_dir ${CMAKE_CURRENT_LIST_DIR})

add_library(kvtier_server_config ${_svc_dir}/server_config.cc)
target_link_libraries(kvtier_server_config PUBLIC kvtier_proto kvtier_common)

add_library(kvtier_service
  ${_svc_dir}/service.cc
  ${_svc_dir}/service_data_plane.cc
  ${_svc_dir}/ucx_arena_memory.cc
  ${_svc_dir}/ucx_data_plane.cc)
target_link_libraries(kvtier_service
  PUBLIC kvtier_proto_convert kvtier_store_core kvtier_common kvtier_ucx gRPC::grpc++
         absl::random_random absl::time)

if(TARGET gRPC::grpc++_reflection)
  set(_svc_reflection gRPC::grpc++_reflection)
else()
  set(_svc_reflection grpc++_reflection)
endif()

if(TARGET kvtier_store_core)
  add_executable(kvtier-server ${_svc_dir}/server_main.cc)
  target_link_libraries(kvtier-server PRIVATE
    kvtier_service kvtier_server_config ${_svc_reflection}
    absl::flags absl::flags_parse absl::flags_usage)
else()
  message(STATUS "kvtier: kvtier_store_core not defined yet; kvtier-server is not built")
endif()

if(KVTIER_BUILD_TESTS)
  kvtier_test(server_config_test
    SOURCES ${_svc_dir}/server_config_test.cc
    LIBS kvtier_server_config)
endif()

if(KVTIER_BUILD_TESTS AND TARGET kvtier_store_core)
  kvtier_test(service_test
    SOURCES ${_svc_dir}/service_test.cc
    LIBS kvtier_service)
  kvtier_test(ucx_data_plane_unit_test
    SOURCES ${_svc_dir}/ucx_data_plane_test.cc
    LIBS kvtier_service)
endif()
