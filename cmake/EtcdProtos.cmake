# etcd's v3 API (KV, Lease, Watch, ...) compiled from etcd's own .proto
# files into the library kvtier_etcd_proto, which kvstore/cluster/ links.
# Included from proto/CMakeLists.txt.
#
# Why the files are rewritten: as shipped they import gogoproto/gogo.proto
# (gogo/protobuf's Go code-generation options) and
# google/api/annotations.proto (grpc-gateway's HTTP mapping). Neither is
# installed for C++ here, and neither changes a message, a field number or
# an RPC name, so the wire format is the same without them. Each file is
# copied into the build tree at configure time with those imports and
# options removed; the originals are configure dependencies, so an update
# of the package re-runs the copy.

set(KVTIER_ETCD_PROTO_ROOT /usr/share/gocode/src/go.etcd.io/etcd CACHE PATH
    "etcd's source tree with its .proto files (Debian: golang-etcd-server-dev)")

# Copies `src` to `dst` without the gogoproto and google.api annotations.
# Writes only when the text changed, so an unrelated re-configure rebuilds
# nothing.
function(_kvtier_etcd_strip_proto src dst)
  file(READ ${src} text)
  string(REGEX REPLACE "import \"(gogoproto/gogo|google/api/annotations)\\.proto\";" ""
         text "${text}")
  # File options: option (gogoproto.marshaler_all) = true;
  string(REGEX REPLACE "option \\(gogoproto\\.[^;]*;" "" text "${text}")
  # RPC options spanning lines, with nested blocks but no ';' before "};":
  # option (google.api.http) = { post: "/v3/kv/range" body: "*" };
  string(REGEX REPLACE "option \\(google\\.api\\.http\\) = {[^;]*};" "" text "${text}")
  # Field options: [(gogoproto.nullable) = false]
  string(REGEX REPLACE "\\[\\(gogoproto\\.[^]]*\\]" "" text "${text}")
  if(text MATCHES "gogoproto|google\\.api")
    message(FATAL_ERROR "EtcdProtos: an annotation in ${src} was not stripped; "
                        "extend the patterns in cmake/EtcdProtos.cmake")
  endif()
  set(old "")
  if(EXISTS ${dst})
    file(READ ${dst} old)
  endif()
  if(NOT "${old}" STREQUAL "${text}")
    file(WRITE ${dst} "${text}")
  endif()
endfunction()

function(_kvtier_etcd_protos)
  # Under the root; protoc sees each as etcd/<path>, as rpc.proto imports it.
  set(files
    mvcc/mvccpb/kv.proto
    auth/authpb/auth.proto
    etcdserver/etcdserverpb/rpc.proto)
  foreach(file ${files})
    if(NOT EXISTS ${KVTIER_ETCD_PROTO_ROOT}/${file})
      message(FATAL_ERROR
        "etcd's .proto files are missing: no ${KVTIER_ETCD_PROTO_ROOT}/${file}. "
        "Install the Debian package golang-etcd-server-dev (scripts/main.sh and "
        "scripts/test.sh install it), "
        "or point KVTIER_ETCD_PROTO_ROOT at an etcd 3.4 source tree.")
    endif()
  endforeach()

  # Copied protos and generated code share one root: the generated headers
  # include each other as "etcd/mvcc/mvccpb/kv.pb.h".
  set(root ${CMAKE_CURRENT_BINARY_DIR}/etcd_api)
  set(copies)
  foreach(file ${files})
    _kvtier_etcd_strip_proto(${KVTIER_ETCD_PROTO_ROOT}/${file} ${root}/etcd/${file})
    set_property(DIRECTORY APPEND PROPERTY CMAKE_CONFIGURE_DEPENDS
                 ${KVTIER_ETCD_PROTO_ROOT}/${file})
    list(APPEND copies ${root}/etcd/${file})
  endforeach()

  set(srcs)
  foreach(file ${files})
    string(REGEX REPLACE "\\.proto$" "" stem etcd/${file})
    set(outs ${root}/${stem}.pb.cc ${root}/${stem}.pb.h)
    set(grpc_args)
    # Only rpc.proto declares services.
    if(file MATCHES "rpc\\.proto$")
      list(APPEND outs ${root}/${stem}.grpc.pb.cc ${root}/${stem}.grpc.pb.h)
      set(grpc_args --grpc_out=${root} --plugin=protoc-gen-grpc=${KVTIER_GRPC_CPP_PLUGIN})
    endif()
    add_custom_command(
      OUTPUT ${outs}
      COMMAND ${KVTIER_PROTOC} --proto_path=${root} --cpp_out=${root} ${grpc_args}
              ${root}/etcd/${file}
      DEPENDS ${copies}
      COMMENT "protoc etcd/${file}")
    list(APPEND srcs ${outs})
  endforeach()

  add_library(kvtier_etcd_proto ${srcs})
  target_include_directories(kvtier_etcd_proto PUBLIC ${root})
  target_link_libraries(kvtier_etcd_proto PUBLIC protobuf::libprotobuf gRPC::grpc++)
  # Generated code is not ours to warn about.
  target_compile_options(kvtier_etcd_proto PRIVATE -w)
endfunction()

_kvtier_etcd_protos()
