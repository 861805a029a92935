# expect_compile(NAME BODY WANT_OK): compiles `${prelude}` plus a function
# whose body is BODY with ${CXX} ${flags} (-fsyntax-only) and fails unless
# it compiles (WANT_OK TRUE) or fails with a diagnostic matching
# ${diagnostic} (WANT_OK FALSE). For the build-check tests run with -P;
# they set CXX, WORK_DIR, prelude, flags and diagnostic first.
function(expect_compile name body want_ok)
  set(file ${WORK_DIR}/expect_compile_${name}.cc)
  file(WRITE ${file} "${prelude}\n${body}\n")
  execute_process(COMMAND ${CXX} ${flags} -fsyntax-only ${file}
                  RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
  if(want_ok AND NOT rc EQUAL 0)
    message(FATAL_ERROR "${name}: should compile, but:\n${err}")
  endif()
  if(NOT want_ok)
    if(rc EQUAL 0)
      message(FATAL_ERROR "${name}: compiled, but the check should have rejected it")
    endif()
    if(NOT err MATCHES "${diagnostic}")
      message(FATAL_ERROR "${name}: failed for another reason:\n${err}")
    endif()
  endif()
  message(STATUS "${name}: as expected")
endfunction()
