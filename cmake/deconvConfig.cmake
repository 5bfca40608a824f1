# CMake package of deconv, installed by `cargo cinstall` into <prefix>/share/deconv/.
#
#   find_package(deconv 0.1 REQUIRED)          # with -DCMAKE_PREFIX_PATH=<prefix> if needed
#   target_link_libraries(app PRIVATE deconv::deconv)          # the shared library
#   target_link_libraries(app PRIVATE deconv::deconv_static)   # or the static one
#   target_link_libraries(fapp PRIVATE deconv::fortran)        # Fortran: the module + deconv::deconv
#
# Everything is read from what cargo-c installed: the prefix is two levels up from this
# file, the library directory is the one holding deconv.pc (lib/ or lib/<multiarch>/), and the
# static library's link line is the .pc's Libs.private (the native libraries rustc reports,
# -lopenblas with the OpenBLAS backend), so this file never goes stale.

get_filename_component(_deconv_prefix "${CMAKE_CURRENT_LIST_DIR}/../.." ABSOLUTE)
file(GLOB _deconv_pc
    "${_deconv_prefix}/lib*/pkgconfig/deconv.pc"
    "${_deconv_prefix}/lib/*/pkgconfig/deconv.pc")
if(NOT _deconv_pc)
    set(deconv_FOUND FALSE)
    set(deconv_NOT_FOUND_MESSAGE "no deconv.pc under ${_deconv_prefix}/lib*")
    return()
endif()
list(GET _deconv_pc 0 _deconv_pc)
get_filename_component(_deconv_libdir "${_deconv_pc}" DIRECTORY)
get_filename_component(_deconv_libdir "${_deconv_libdir}" DIRECTORY)
set(deconv_INCLUDE_DIR "${_deconv_prefix}/include/deconv")
set(deconv_FORTRAN_SOURCE "${deconv_INCLUDE_DIR}/deconv.f90")

# Libs.private: "-lgcc_s -lutil ... -lc" -> a list of libraries for the static target.
file(STRINGS "${_deconv_pc}" _deconv_private REGEX "^Libs.private:")
string(REGEX REPLACE "^Libs.private:[ \t]*" "" _deconv_private "${_deconv_private}")
separate_arguments(_deconv_private UNIX_COMMAND "${_deconv_private}")
set(deconv_STATIC_LINK_LIBRARIES "")
foreach(_flag IN LISTS _deconv_private)
    if(_flag MATCHES "^-l(.+)$")
        list(APPEND deconv_STATIC_LINK_LIBRARIES "${CMAKE_MATCH_1}")
    elseif(NOT _flag STREQUAL "")
        list(APPEND deconv_STATIC_LINK_LIBRARIES "${_flag}")
    endif()
endforeach()

if(NOT TARGET deconv::deconv)
    set(deconv_FOUND TRUE)
    if(EXISTS "${_deconv_libdir}/libdeconv.so")
        # Linked by this path; the program records the library's SONAME (libdeconv.so.0.MINOR).
        add_library(deconv::deconv SHARED IMPORTED)
        set_target_properties(deconv::deconv PROPERTIES
            IMPORTED_LOCATION "${_deconv_libdir}/libdeconv.so"
            INTERFACE_INCLUDE_DIRECTORIES "${deconv_INCLUDE_DIR}")
    endif()
    if(EXISTS "${_deconv_libdir}/libdeconv.a")
        add_library(deconv::deconv_static STATIC IMPORTED)
        set_target_properties(deconv::deconv_static PROPERTIES
            IMPORTED_LOCATION "${_deconv_libdir}/libdeconv.a"
            IMPORTED_LINK_INTERFACE_LANGUAGES "C"
            INTERFACE_INCLUDE_DIRECTORIES "${deconv_INCLUDE_DIR}"
            INTERFACE_LINK_LIBRARIES "${deconv_STATIC_LINK_LIBRARIES}")
        if(NOT TARGET deconv::deconv)
            add_library(deconv::deconv INTERFACE IMPORTED)
            set_target_properties(deconv::deconv PROPERTIES
                INTERFACE_LINK_LIBRARIES deconv::deconv_static)
        endif()
    endif()
    if(NOT TARGET deconv::deconv)
        set(deconv_FOUND FALSE)
        set(deconv_NOT_FOUND_MESSAGE "neither libdeconv.so nor libdeconv.a in ${_deconv_libdir}")
        return()
    endif()
    # Fortran: the module is compiled with the program (.mod files are compiler-specific).
    add_library(deconv::fortran INTERFACE IMPORTED)
    set_target_properties(deconv::fortran PROPERTIES
        INTERFACE_SOURCES "${deconv_FORTRAN_SOURCE}"
        INTERFACE_LINK_LIBRARIES deconv::deconv)
endif()
