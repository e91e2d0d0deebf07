# Read by ctest (the tests folder's TEST_INCLUDE_FILES, written by tests/CMakeLists.txt with `exe`,
# `group_size`, `per_test_suites` and `working_directory` set): the suite's ctest tests, one per group
# of at most `group_size` GoogleTest tests of one suite, run as one process with --gtest_filter.
#
# Why groups: each process pays LibTorch's start-up (its operator registry: about 0.7 s here), which
# one ctest test per GoogleTest test paid 317 times, a quarter of the suite's CPU time.
# Names: a suite of up to `group_size` tests is one ctest test named as the suite (`MLP`); a larger one
# is split into equal parts `CLI.1`, `CLI.2`, ... The failing GoogleTest tests are named in the output
# ("[  FAILED  ] Suite.Test"), which scripts/ctest_failures.py reads.
# Suites in `per_test_suites` (those whose tests may GTEST_SKIP, like Cuda without a GPU) keep one ctest
# test per GoogleTest test: ctest's skip expression marks a whole test skipped whatever its exit code,
# so a group must never carry it.
cmake_policy(VERSION 3.16...3.25)  # ctest reads this file with no project policies: if(IN_LIST) and the list commands
execute_process(COMMAND "${exe}" --gtest_list_tests
                OUTPUT_VARIABLE listing ERROR_VARIABLE listing_error RESULT_VARIABLE listed TIMEOUT 120)
# A binary that cannot list its tests, or lists none, gives one failing test that shows the listing,
# rather than a suite that silently has no tests: the listing again, which fails by its exit code, or,
# when it exited 0 with nothing listed, by WILL_FAIL.
macro(add_listing_failure listing_exited_0)
  add_test(flowmatch_tests.list "${exe}" --gtest_list_tests)
  set_tests_properties(flowmatch_tests.list PROPERTIES WILL_FAIL ${listing_exited_0})
  return()
endmacro()
if(NOT listed EQUAL 0)
  add_listing_failure(FALSE)
endif()
string(REPLACE "\n" ";" lines "${listing}")
set(suites "")
set(suite "")
foreach(line IN LISTS lines)
  if(line MATCHES "^([A-Za-z0-9_]+)\\.$")
    set(suite "${CMAKE_MATCH_1}")
    list(APPEND suites "${suite}")
    set("tests_${suite}" "")
  elseif(suite AND line MATCHES "^  ([A-Za-z0-9_]+)$")
    list(APPEND "tests_${suite}" "${CMAKE_MATCH_1}")
  endif()
endforeach()
if(NOT suites)
  add_listing_failure(TRUE)
endif()

foreach(suite IN LISTS suites)
  set(tests "${tests_${suite}}")
  list(LENGTH tests n)
  if(n EQUAL 0)
    continue()
  endif()
  if(suite IN_LIST per_test_suites)
    foreach(test IN LISTS tests)
      add_test("${suite}.${test}" "${exe}" "--gtest_filter=${suite}.${test}")
      set_tests_properties("${suite}.${test}" PROPERTIES WORKING_DIRECTORY "${working_directory}" TIMEOUT 600
                           SKIP_REGULAR_EXPRESSION "\\[  SKIPPED \\]")
    endforeach()
    continue()
  endif()
  math(EXPR parts "(${n} + ${group_size} - 1) / ${group_size}")
  set(first 0)
  foreach(part RANGE 1 ${parts})
    # Equal parts: the first (n mod parts) get one test more.
    math(EXPR size "${n} / ${parts}")
    math(EXPR extra "${n} % ${parts}")
    if(part LESS_EQUAL extra)
      math(EXPR size "${size} + 1")
    endif()
    list(SUBLIST tests ${first} ${size} members)
    math(EXPR first "${first} + ${size}")
    list(TRANSFORM members PREPEND "${suite}.")
    list(JOIN members ":" filter)
    if(parts EQUAL 1)
      set(name "${suite}")
    else()
      set(name "${suite}.${part}")
    endif()
    add_test("${name}" "${exe}" "--gtest_filter=${filter}")
    # COST: ctest starts the costlier tests first when it has no timings of its own yet.
    set_tests_properties("${name}" PROPERTIES WORKING_DIRECTORY "${working_directory}" TIMEOUT 600 COST ${size})
  endforeach()
endforeach()
