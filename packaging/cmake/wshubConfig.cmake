# find_package(wshub) for the installed wshub C library.
#
#   find_package(wshub REQUIRED)
#   target_link_libraries(app PRIVATE wshub::wshub)         # libwshub.so
#   target_link_libraries(app PRIVATE wshub::wshub_static)  # libwshub.a
#
# Relocatable: paths are found from this file's place,
# <prefix>/lib/cmake/wshub/wshubConfig.cmake.
get_filename_component(_wshub_prefix "${CMAKE_CURRENT_LIST_DIR}/../../.." ABSOLUTE)
set(wshub_INCLUDE_DIRS "${_wshub_prefix}/include")

if(NOT TARGET wshub::wshub)
  add_library(wshub::wshub SHARED IMPORTED)
  set_target_properties(wshub::wshub PROPERTIES
    # A link to libwshub.so.<major>; programs record that SONAME.
    IMPORTED_LOCATION "${_wshub_prefix}/lib/libwshub.so"
    INTERFACE_INCLUDE_DIRECTORIES "${wshub_INCLUDE_DIRS}")
endif()

if(NOT TARGET wshub::wshub_static)
  include(CMakeFindDependencyMacro)
  find_dependency(Threads)
  add_library(wshub::wshub_static STATIC IMPORTED)
  set_target_properties(wshub::wshub_static PROPERTIES
    IMPORTED_LOCATION "${_wshub_prefix}/lib/libwshub.a"
    INTERFACE_INCLUDE_DIRECTORIES "${wshub_INCLUDE_DIRS}"
    INTERFACE_LINK_LIBRARIES "Threads::Threads;${CMAKE_DL_LIBS};m")
endif()

set(wshub_LIBRARIES wshub::wshub)
unset(_wshub_prefix)
