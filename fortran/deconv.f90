! deconv: the Fortran 2008 interface to the C API (include/deconv.h).
!
! Installed by `cargo cinstall` next to the header, as source: a compiled .mod file belongs to
! one compiler and version, so compile this file with the program that uses it, e.g.
!
!   gfortran -c "$(pkg-config --variable=includedir deconv)/deconv/deconv.f90"
!   gfortran my.f90 deconv.o $(pkg-config --libs deconv)
!
! or, with CMake, link the target deconv::fortran (it adds this file to your target).
!
! What it has:
! - every function of deconv.h as an iso_c_binding interface, under the C name (status
!   codes are integer(c_int), pointers type(c_ptr)), and the C enums as named constants
!   (DECONV_OK, DECONV_ACTIVATION_LEAKY, DECONV_BUFFER_WEIGHTS, ...);
! - the C structs as bind(c) derived types: deconv_config, deconv_geometry,
!   deconv_update_args (float), deconv_update_args_f64 (double), deconv_weights_header.
!   Pairs are (height, width): config%stride = [2, 2];
! - type(deconv_layer), a handle with type-bound procedures for the common calls, generic
!   over real(c_float) and real(c_double) arrays: create, forward, backward, update, set, get,
!   output, delta, geometry, free. Each takes an optional `stat`: with it, the status is
!   returned there (DECONV_OK or an error code; deconv_error_message() says why); without
!   it, a failure stops the program with the library's message (as allocate does);
! - helpers: deconv_default_config, deconv_sgd, deconv_adam, deconv_error_message,
!   deconv_status_string, deconv_version_string.
!
! Kept in step with deconv.h by hand; .ci/run checks that every C function has an interface
! here and compiles this file with gfortran -std=f2008 -Wall.
module deconv
  use, intrinsic :: iso_c_binding
  use, intrinsic :: iso_fortran_env, only: error_unit
  implicit none
  private
  public :: c_float, c_double, c_int, c_size_t, c_int64_t, c_ptr, c_null_ptr, c_null_char
  public :: c_funptr, c_funloc, c_null_funptr, c_loc

  ! deconv_status codes
  integer(c_int), parameter, public :: DECONV_OK = 0
  integer(c_int), parameter, public :: DECONV_ERR_NULL_POINTER = 1
  integer(c_int), parameter, public :: DECONV_ERR_INVALID_PARAMETER = 2
  integer(c_int), parameter, public :: DECONV_ERR_BUFFER_LENGTH = 3
  integer(c_int), parameter, public :: DECONV_ERR_INVALID_STATE = 4
  integer(c_int), parameter, public :: DECONV_ERR_OVERFLOW = 5
  integer(c_int), parameter, public :: DECONV_ERR_GEMM_SHAPE = 6
  integer(c_int), parameter, public :: DECONV_ERR_IO = 7
  integer(c_int), parameter, public :: DECONV_ERR_FORMAT = 8
  integer(c_int), parameter, public :: DECONV_ERR_PANIC = 9
  integer(c_int), parameter, public :: DECONV_ERR_OTHER = 10
  integer(c_int), parameter, public :: DECONV_ERR_ALLOCATION = 11
  integer(c_int), parameter, public :: DECONV_ERR_COLLECTIVE = 12

  ! deconv_activation codes
  integer(c_int), parameter, public :: DECONV_ACTIVATION_LOGISTIC = 0
  integer(c_int), parameter, public :: DECONV_ACTIVATION_RELU = 1
  integer(c_int), parameter, public :: DECONV_ACTIVATION_RELIE = 2
  integer(c_int), parameter, public :: DECONV_ACTIVATION_LINEAR = 3
  integer(c_int), parameter, public :: DECONV_ACTIVATION_RAMP = 4
  integer(c_int), parameter, public :: DECONV_ACTIVATION_TANH = 5
  integer(c_int), parameter, public :: DECONV_ACTIVATION_PLSE = 6
  integer(c_int), parameter, public :: DECONV_ACTIVATION_LEAKY = 7
  integer(c_int), parameter, public :: DECONV_ACTIVATION_ELU = 8
  integer(c_int), parameter, public :: DECONV_ACTIVATION_LOGGY = 9
  integer(c_int), parameter, public :: DECONV_ACTIVATION_STAIR = 10
  integer(c_int), parameter, public :: DECONV_ACTIVATION_HARDTAN = 11
  integer(c_int), parameter, public :: DECONV_ACTIVATION_LHTAN = 12
  integer(c_int), parameter, public :: DECONV_ACTIVATION_SELU = 13

  ! deconv_algorithm codes
  integer(c_int), parameter, public :: DECONV_ALGORITHM_AUTO = 0
  integer(c_int), parameter, public :: DECONV_ALGORITHM_COLUMNS = 1
  integer(c_int), parameter, public :: DECONV_ALGORITHM_PHASES = 2
  integer(c_int), parameter, public :: DECONV_ALGORITHM_DIRECT = 3

  ! deconv_mode codes
  integer(c_int), parameter, public :: DECONV_MODE_TRAIN = 0
  integer(c_int), parameter, public :: DECONV_MODE_INFERENCE = 1

  ! deconv_optimizer codes
  integer(c_int), parameter, public :: DECONV_OPTIMIZER_SGD = 0
  integer(c_int), parameter, public :: DECONV_OPTIMIZER_ADAM = 1

  ! deconv_backend codes
  integer(c_int), parameter, public :: DECONV_BACKEND_DEFAULT = 0
  integer(c_int), parameter, public :: DECONV_BACKEND_MATRIXMULTIPLY = 1
  integer(c_int), parameter, public :: DECONV_BACKEND_OPENBLAS = 2

  ! deconv_buffer codes
  integer(c_int), parameter, public :: DECONV_BUFFER_WEIGHTS = 0
  integer(c_int), parameter, public :: DECONV_BUFFER_WEIGHT_UPDATES = 1
  integer(c_int), parameter, public :: DECONV_BUFFER_BIASES = 2
  integer(c_int), parameter, public :: DECONV_BUFFER_BIAS_UPDATES = 3
  integer(c_int), parameter, public :: DECONV_BUFFER_SCALES = 4
  integer(c_int), parameter, public :: DECONV_BUFFER_SCALE_UPDATES = 5
  integer(c_int), parameter, public :: DECONV_BUFFER_ROLLING_MEAN = 6
  integer(c_int), parameter, public :: DECONV_BUFFER_ROLLING_VARIANCE = 7
  integer(c_int), parameter, public :: DECONV_BUFFER_BATCH_MEAN = 8
  integer(c_int), parameter, public :: DECONV_BUFFER_BATCH_VARIANCE = 9
  integer(c_int), parameter, public :: DECONV_BUFFER_X_NORM = 10
  integer(c_int), parameter, public :: DECONV_BUFFER_OUTPUT = 11
  integer(c_int), parameter, public :: DECONV_BUFFER_DELTA = 12
  integer(c_int), parameter, public :: DECONV_BUFFER_ADAM_WEIGHTS_M = 13
  integer(c_int), parameter, public :: DECONV_BUFFER_ADAM_WEIGHTS_V = 14
  integer(c_int), parameter, public :: DECONV_BUFFER_ADAM_BIASES_M = 15
  integer(c_int), parameter, public :: DECONV_BUFFER_ADAM_BIASES_V = 16
  integer(c_int), parameter, public :: DECONV_BUFFER_ADAM_SCALES_M = 17
  integer(c_int), parameter, public :: DECONV_BUFFER_ADAM_SCALES_V = 18
  integer(c_int), parameter, public :: DECONV_BUFFER_GRADIENTS = 19

  ! deconv_precision codes
  integer(c_int), parameter, public :: DECONV_PRECISION_F32 = 0
  integer(c_int), parameter, public :: DECONV_PRECISION_F64 = 1

  !> A layer's configuration (C deconv_config); fill with deconv_default_config.
  type, bind(c), public :: deconv_config
    integer(c_size_t) :: batch, in_channels, in_h, in_w, filters
    integer(c_size_t) :: kernel(2), stride(2), pad(2), dilation(2), output_padding(2)
    integer(c_size_t) :: groups
    integer(c_int) :: activation, batch_normalize, adam, own_workspace, algorithm, training
    integer(c_int64_t) :: seed
  end type deconv_config

  !> A layer's sizes in elements (C deconv_geometry).
  type, bind(c), public :: deconv_geometry
    integer(c_size_t) :: batch, in_channels, in_h, in_w, filters, out_h, out_w, groups
    integer(c_size_t) :: inputs, outputs, input_len, output_len, weight_count, workspace_size
  end type deconv_geometry

  !> Update arguments of a float layer (C deconv_update_args); fill with deconv_sgd/deconv_adam.
  type, bind(c), public :: deconv_update_args
    real(c_float) :: learning_rate, momentum, decay
    integer(c_size_t) :: batch
    integer(c_int) :: optimizer
    real(c_float) :: beta1, beta2, epsilon
  end type deconv_update_args

  !> Update arguments of a double layer (C deconv_update_args_f64).
  type, bind(c), public :: deconv_update_args_f64
    real(c_double) :: learning_rate, momentum, decay
    integer(c_size_t) :: batch
    integer(c_int) :: optimizer
    real(c_double) :: beta1, beta2, epsilon
  end type deconv_update_args_f64

  !> A group of ranks for data-parallel training (C deconv_collective): the rank, the size,
  !> two bind(c) callbacks (c_funloc of an allreduce-sum and of a broadcast, see deconv.h) and
  !> a context passed to both.
  type, bind(c), public :: deconv_collective
    integer(c_int) :: rank, size
    type(c_funptr) :: allreduce_sum, broadcast
    type(c_ptr) :: context
  end type deconv_collective

  !> The header of a Darknet .weights file (C deconv_weights_header).
  type, bind(c), public :: deconv_weights_header
    integer(c_int32_t) :: major, minor, revision
    integer(c_int64_t) :: seen
  end type deconv_weights_header

  !> A layer handle (float or double). Free it with `call layer%free()`.
  type, public :: deconv_layer
    type(c_ptr) :: ptr = c_null_ptr
  contains
    procedure :: create => layer_create
    procedure :: free => layer_free
    procedure :: geometry => layer_geometry
    procedure, private :: forward_f32, forward_f64
    generic :: forward => forward_f32, forward_f64
    procedure, private :: backward_f32, backward_f64
    generic :: backward => backward_f32, backward_f64
    procedure, private :: update_f32, update_f64
    generic :: update => update_f32, update_f64
    procedure, private :: set_f32, set_f64
    generic :: set => set_f32, set_f64
    procedure, private :: get_f32, get_f64
    generic :: get => get_f32, get_f64
    procedure, private :: output_f32, output_f64
    generic :: output => output_f32, output_f64
    procedure, private :: delta_f32, delta_f64
    generic :: delta => delta_f32, delta_f64
  end type deconv_layer

  !> SGD arguments: deconv_sgd(learning_rate, momentum, decay, batch), float or double.
  interface deconv_sgd
    module procedure sgd_f32, sgd_f64
  end interface deconv_sgd
  public :: deconv_sgd

  !> Adam arguments with Darknet's defaults: deconv_adam(learning_rate, decay, batch).
  interface deconv_adam
    module procedure adam_f32, adam_f64
  end interface deconv_adam
  public :: deconv_adam

  public :: deconv_default_config, deconv_error_message, deconv_status_string
  public :: deconv_version_string

  ! The C API, one interface per function of deconv.h.
  interface
    function deconv_version() bind(c, name="deconv_version")
      import
      type(c_ptr) :: deconv_version
    end function deconv_version

    function deconv_status_name(status) bind(c, name="deconv_status_name")
      import
      type(c_ptr) :: deconv_status_name
      integer(c_int), value :: status
    end function deconv_status_name

    function deconv_last_error() bind(c, name="deconv_last_error")
      import
      type(c_ptr) :: deconv_last_error
    end function deconv_last_error

    function deconv_backend_compiled(backend, compiled) bind(c, name="deconv_backend_compiled")
      import
      integer(c_int) :: deconv_backend_compiled
      integer(c_int), value :: backend
      integer(c_int), intent(out) :: compiled
    end function deconv_backend_compiled

    function deconv_config_default( &
        config, batch, in_channels, in_h, in_w, filters, kernel) &
        bind(c, name="deconv_config_default")
      import
      integer(c_int) :: deconv_config_default
      type(deconv_config), intent(out) :: config
      integer(c_size_t), value :: batch
      integer(c_size_t), value :: in_channels
      integer(c_size_t), value :: in_h
      integer(c_size_t), value :: in_w
      integer(c_size_t), value :: filters
      integer(c_size_t), value :: kernel
    end function deconv_config_default

    function deconv_update_args_sgd( &
        args, learning_rate, momentum, decay, batch) &
        bind(c, name="deconv_update_args_sgd")
      import
      integer(c_int) :: deconv_update_args_sgd
      type(deconv_update_args), intent(out) :: args
      real(c_float), value :: learning_rate
      real(c_float), value :: momentum
      real(c_float), value :: decay
      integer(c_size_t), value :: batch
    end function deconv_update_args_sgd

    function deconv_update_args_sgd_f64( &
        args, learning_rate, momentum, decay, batch) &
        bind(c, name="deconv_update_args_sgd_f64")
      import
      integer(c_int) :: deconv_update_args_sgd_f64
      type(deconv_update_args_f64), intent(out) :: args
      real(c_double), value :: learning_rate
      real(c_double), value :: momentum
      real(c_double), value :: decay
      integer(c_size_t), value :: batch
    end function deconv_update_args_sgd_f64

    function deconv_update_args_adam( &
        args, learning_rate, decay, batch) &
        bind(c, name="deconv_update_args_adam")
      import
      integer(c_int) :: deconv_update_args_adam
      type(deconv_update_args), intent(out) :: args
      real(c_float), value :: learning_rate
      real(c_float), value :: decay
      integer(c_size_t), value :: batch
    end function deconv_update_args_adam

    function deconv_update_args_adam_f64( &
        args, learning_rate, decay, batch) &
        bind(c, name="deconv_update_args_adam_f64")
      import
      integer(c_int) :: deconv_update_args_adam_f64
      type(deconv_update_args_f64), intent(out) :: args
      real(c_double), value :: learning_rate
      real(c_double), value :: decay
      integer(c_size_t), value :: batch
    end function deconv_update_args_adam_f64

    function deconv_layer_create(config, backend, out) bind(c, name="deconv_layer_create")
      import
      integer(c_int) :: deconv_layer_create
      type(deconv_config), intent(in) :: config
      integer(c_int), value :: backend
      type(c_ptr), intent(out) :: out
    end function deconv_layer_create

    function deconv_layer_create_f64( &
        config, backend, out) &
        bind(c, name="deconv_layer_create_f64")
      import
      integer(c_int) :: deconv_layer_create_f64
      type(deconv_config), intent(in) :: config
      integer(c_int), value :: backend
      type(c_ptr), intent(out) :: out
    end function deconv_layer_create_f64

    function deconv_layer_clone(layer, out) bind(c, name="deconv_layer_clone")
      import
      integer(c_int) :: deconv_layer_clone
      type(c_ptr), value :: layer
      type(c_ptr), intent(out) :: out
    end function deconv_layer_clone

    function deconv_layer_free(layer) bind(c, name="deconv_layer_free")
      import
      integer(c_int) :: deconv_layer_free
      type(c_ptr), value :: layer
    end function deconv_layer_free

    function deconv_layer_config(layer, config) bind(c, name="deconv_layer_config")
      import
      integer(c_int) :: deconv_layer_config
      type(c_ptr), value :: layer
      type(deconv_config), intent(out) :: config
    end function deconv_layer_config

    function deconv_layer_geometry(layer, geometry) bind(c, name="deconv_layer_geometry")
      import
      integer(c_int) :: deconv_layer_geometry
      type(c_ptr), value :: layer
      type(deconv_geometry), intent(out) :: geometry
    end function deconv_layer_geometry

    function deconv_layer_backend(layer, backend) bind(c, name="deconv_layer_backend")
      import
      integer(c_int) :: deconv_layer_backend
      type(c_ptr), value :: layer
      integer(c_int), intent(out) :: backend
    end function deconv_layer_backend

    function deconv_layer_learning_rate_scale( &
        layer, scale) &
        bind(c, name="deconv_layer_learning_rate_scale")
      import
      integer(c_int) :: deconv_layer_learning_rate_scale
      type(c_ptr), value :: layer
      real(c_float), intent(out) :: scale
    end function deconv_layer_learning_rate_scale

    function deconv_layer_learning_rate_scale_f64( &
        layer, scale) &
        bind(c, name="deconv_layer_learning_rate_scale_f64")
      import
      integer(c_int) :: deconv_layer_learning_rate_scale_f64
      type(c_ptr), value :: layer
      real(c_double), intent(out) :: scale
    end function deconv_layer_learning_rate_scale_f64

    function deconv_layer_set_learning_rate_scale( &
        layer, scale) &
        bind(c, name="deconv_layer_set_learning_rate_scale")
      import
      integer(c_int) :: deconv_layer_set_learning_rate_scale
      type(c_ptr), value :: layer
      real(c_float), value :: scale
    end function deconv_layer_set_learning_rate_scale

    function deconv_layer_set_learning_rate_scale_f64( &
        layer, scale) &
        bind(c, name="deconv_layer_set_learning_rate_scale_f64")
      import
      integer(c_int) :: deconv_layer_set_learning_rate_scale_f64
      type(c_ptr), value :: layer
      real(c_double), value :: scale
    end function deconv_layer_set_learning_rate_scale_f64

    function deconv_layer_adam_step(layer, step) bind(c, name="deconv_layer_adam_step")
      import
      integer(c_int) :: deconv_layer_adam_step
      type(c_ptr), value :: layer
      integer(c_int64_t), intent(out) :: step
    end function deconv_layer_adam_step

    function deconv_layer_set_adam_step(layer, step) bind(c, name="deconv_layer_set_adam_step")
      import
      integer(c_int) :: deconv_layer_set_adam_step
      type(c_ptr), value :: layer
      integer(c_int64_t), value :: step
    end function deconv_layer_set_adam_step

    function deconv_layer_buffer(layer, which, data, len) bind(c, name="deconv_layer_buffer")
      import
      integer(c_int) :: deconv_layer_buffer
      type(c_ptr), value :: layer
      integer(c_int), value :: which
      type(c_ptr), intent(out) :: data
      integer(c_size_t), intent(out) :: len
    end function deconv_layer_buffer

    function deconv_layer_buffer_f64( &
        layer, which, data, len) &
        bind(c, name="deconv_layer_buffer_f64")
      import
      integer(c_int) :: deconv_layer_buffer_f64
      type(c_ptr), value :: layer
      integer(c_int), value :: which
      type(c_ptr), intent(out) :: data
      integer(c_size_t), intent(out) :: len
    end function deconv_layer_buffer_f64

    function deconv_layer_buffer_mut( &
        layer, which, data, len) &
        bind(c, name="deconv_layer_buffer_mut")
      import
      integer(c_int) :: deconv_layer_buffer_mut
      type(c_ptr), value :: layer
      integer(c_int), value :: which
      type(c_ptr), intent(out) :: data
      integer(c_size_t), intent(out) :: len
    end function deconv_layer_buffer_mut

    function deconv_layer_buffer_mut_f64( &
        layer, which, data, len) &
        bind(c, name="deconv_layer_buffer_mut_f64")
      import
      integer(c_int) :: deconv_layer_buffer_mut_f64
      type(c_ptr), value :: layer
      integer(c_int), value :: which
      type(c_ptr), intent(out) :: data
      integer(c_size_t), intent(out) :: len
    end function deconv_layer_buffer_mut_f64

    function deconv_layer_output(layer, data, len) bind(c, name="deconv_layer_output")
      import
      integer(c_int) :: deconv_layer_output
      type(c_ptr), value :: layer
      type(c_ptr), intent(out) :: data
      integer(c_size_t), intent(out) :: len
    end function deconv_layer_output

    function deconv_layer_output_f64(layer, data, len) bind(c, name="deconv_layer_output_f64")
      import
      integer(c_int) :: deconv_layer_output_f64
      type(c_ptr), value :: layer
      type(c_ptr), intent(out) :: data
      integer(c_size_t), intent(out) :: len
    end function deconv_layer_output_f64

    function deconv_layer_delta(layer, data, len) bind(c, name="deconv_layer_delta")
      import
      integer(c_int) :: deconv_layer_delta
      type(c_ptr), value :: layer
      type(c_ptr), intent(out) :: data
      integer(c_size_t), intent(out) :: len
    end function deconv_layer_delta

    function deconv_layer_delta_f64(layer, data, len) bind(c, name="deconv_layer_delta_f64")
      import
      integer(c_int) :: deconv_layer_delta_f64
      type(c_ptr), value :: layer
      type(c_ptr), intent(out) :: data
      integer(c_size_t), intent(out) :: len
    end function deconv_layer_delta_f64

    function deconv_layer_get(layer, which, dst, len) bind(c, name="deconv_layer_get")
      import
      integer(c_int) :: deconv_layer_get
      type(c_ptr), value :: layer
      integer(c_int), value :: which
      real(c_float), intent(out) :: dst(*)
      integer(c_size_t), value :: len
    end function deconv_layer_get

    function deconv_layer_get_f64(layer, which, dst, len) bind(c, name="deconv_layer_get_f64")
      import
      integer(c_int) :: deconv_layer_get_f64
      type(c_ptr), value :: layer
      integer(c_int), value :: which
      real(c_double), intent(out) :: dst(*)
      integer(c_size_t), value :: len
    end function deconv_layer_get_f64

    function deconv_layer_set(layer, which, src, len) bind(c, name="deconv_layer_set")
      import
      integer(c_int) :: deconv_layer_set
      type(c_ptr), value :: layer
      integer(c_int), value :: which
      real(c_float), intent(in) :: src(*)
      integer(c_size_t), value :: len
    end function deconv_layer_set

    function deconv_layer_set_f64(layer, which, src, len) bind(c, name="deconv_layer_set_f64")
      import
      integer(c_int) :: deconv_layer_set_f64
      type(c_ptr), value :: layer
      integer(c_int), value :: which
      real(c_double), intent(in) :: src(*)
      integer(c_size_t), value :: len
    end function deconv_layer_set_f64

    function deconv_layer_forward( &
        layer, input, input_len, mode) &
        bind(c, name="deconv_layer_forward")
      import
      integer(c_int) :: deconv_layer_forward
      type(c_ptr), value :: layer
      real(c_float), intent(in) :: input(*)
      integer(c_size_t), value :: input_len
      integer(c_int), value :: mode
    end function deconv_layer_forward

    function deconv_layer_forward_f64( &
        layer, input, input_len, mode) &
        bind(c, name="deconv_layer_forward_f64")
      import
      integer(c_int) :: deconv_layer_forward_f64
      type(c_ptr), value :: layer
      real(c_double), intent(in) :: input(*)
      integer(c_size_t), value :: input_len
      integer(c_int), value :: mode
    end function deconv_layer_forward_f64

    function deconv_layer_forward_with_workspace( &
        layer, input, input_len, mode, workspace, workspace_len) &
        bind(c, name="deconv_layer_forward_with_workspace")
      import
      integer(c_int) :: deconv_layer_forward_with_workspace
      type(c_ptr), value :: layer
      real(c_float), intent(in) :: input(*)
      integer(c_size_t), value :: input_len
      integer(c_int), value :: mode
      real(c_float), intent(inout) :: workspace(*)
      integer(c_size_t), value :: workspace_len
    end function deconv_layer_forward_with_workspace

    function deconv_layer_forward_with_workspace_f64( &
        layer, input, input_len, mode, workspace, workspace_len) &
        bind(c, name="deconv_layer_forward_with_workspace_f64")
      import
      integer(c_int) :: deconv_layer_forward_with_workspace_f64
      type(c_ptr), value :: layer
      real(c_double), intent(in) :: input(*)
      integer(c_size_t), value :: input_len
      integer(c_int), value :: mode
      real(c_double), intent(inout) :: workspace(*)
      integer(c_size_t), value :: workspace_len
    end function deconv_layer_forward_with_workspace_f64

    function deconv_layer_backward( &
        layer, input, input_len, input_delta, input_delta_len) &
        bind(c, name="deconv_layer_backward")
      import
      integer(c_int) :: deconv_layer_backward
      type(c_ptr), value :: layer
      real(c_float), intent(in) :: input(*)
      integer(c_size_t), value :: input_len
      type(c_ptr), value :: input_delta
      integer(c_size_t), value :: input_delta_len
    end function deconv_layer_backward

    function deconv_layer_backward_f64( &
        layer, input, input_len, input_delta, input_delta_len) &
        bind(c, name="deconv_layer_backward_f64")
      import
      integer(c_int) :: deconv_layer_backward_f64
      type(c_ptr), value :: layer
      real(c_double), intent(in) :: input(*)
      integer(c_size_t), value :: input_len
      type(c_ptr), value :: input_delta
      integer(c_size_t), value :: input_delta_len
    end function deconv_layer_backward_f64

    function deconv_layer_backward_with_workspace( &
        layer, input, input_len, input_delta, input_delta_len, workspace, workspace_len) &
        bind(c, name="deconv_layer_backward_with_workspace")
      import
      integer(c_int) :: deconv_layer_backward_with_workspace
      type(c_ptr), value :: layer
      real(c_float), intent(in) :: input(*)
      integer(c_size_t), value :: input_len
      type(c_ptr), value :: input_delta
      integer(c_size_t), value :: input_delta_len
      real(c_float), intent(inout) :: workspace(*)
      integer(c_size_t), value :: workspace_len
    end function deconv_layer_backward_with_workspace

    function deconv_layer_backward_with_workspace_f64( &
        layer, input, input_len, input_delta, input_delta_len, workspace, workspace_len) &
        bind(c, name="deconv_layer_backward_with_workspace_f64")
      import
      integer(c_int) :: deconv_layer_backward_with_workspace_f64
      type(c_ptr), value :: layer
      real(c_double), intent(in) :: input(*)
      integer(c_size_t), value :: input_len
      type(c_ptr), value :: input_delta
      integer(c_size_t), value :: input_delta_len
      real(c_double), intent(inout) :: workspace(*)
      integer(c_size_t), value :: workspace_len
    end function deconv_layer_backward_with_workspace_f64

    function deconv_layer_update(layer, args) bind(c, name="deconv_layer_update")
      import
      integer(c_int) :: deconv_layer_update
      type(c_ptr), value :: layer
      type(deconv_update_args), intent(in) :: args
    end function deconv_layer_update

    function deconv_layer_update_f64(layer, args) bind(c, name="deconv_layer_update_f64")
      import
      integer(c_int) :: deconv_layer_update_f64
      type(c_ptr), value :: layer
      type(deconv_update_args_f64), intent(in) :: args
    end function deconv_layer_update_f64

    function deconv_layer_resize(layer, in_h, in_w) bind(c, name="deconv_layer_resize")
      import
      integer(c_int) :: deconv_layer_resize
      type(c_ptr), value :: layer
      integer(c_size_t), value :: in_h
      integer(c_size_t), value :: in_w
    end function deconv_layer_resize

    function deconv_layer_bilinear_init(layer) bind(c, name="deconv_layer_bilinear_init")
      import
      integer(c_int) :: deconv_layer_bilinear_init
      type(c_ptr), value :: layer
    end function deconv_layer_bilinear_init

    function deconv_layer_denormalize(layer) bind(c, name="deconv_layer_denormalize")
      import
      integer(c_int) :: deconv_layer_denormalize
      type(c_ptr), value :: layer
    end function deconv_layer_denormalize

    function deconv_weights_header_default( &
        header, seen) &
        bind(c, name="deconv_weights_header_default")
      import
      integer(c_int) :: deconv_weights_header_default
      type(deconv_weights_header), intent(out) :: header
      integer(c_int64_t), value :: seen
    end function deconv_weights_header_default

    function deconv_layer_load_weights( &
        layer, path, reject_non_finite, header) &
        bind(c, name="deconv_layer_load_weights")
      import
      integer(c_int) :: deconv_layer_load_weights
      type(c_ptr), value :: layer
      character(kind=c_char), intent(in) :: path(*)
      integer(c_int), value :: reject_non_finite
      type(c_ptr), value :: header
    end function deconv_layer_load_weights

    function deconv_layer_save_weights( &
        layer, path, header) &
        bind(c, name="deconv_layer_save_weights")
      import
      integer(c_int) :: deconv_layer_save_weights
      type(c_ptr), value :: layer
      character(kind=c_char), intent(in) :: path(*)
      type(c_ptr), value :: header
    end function deconv_layer_save_weights

    function deconv_layer_weights_byte_len( &
        layer, header, bytes) &
        bind(c, name="deconv_layer_weights_byte_len")
      import
      integer(c_int) :: deconv_layer_weights_byte_len
      type(c_ptr), value :: layer
      type(c_ptr), value :: header
      integer(c_size_t), intent(out) :: bytes
    end function deconv_layer_weights_byte_len

    function deconv_layer_write_weights( &
        layer, header, data, len) &
        bind(c, name="deconv_layer_write_weights")
      import
      integer(c_int) :: deconv_layer_write_weights
      type(c_ptr), value :: layer
      type(c_ptr), value :: header
      integer(c_int8_t), intent(out) :: data(*)
      integer(c_size_t), value :: len
    end function deconv_layer_write_weights

    function deconv_layer_read_weights( &
        layer, data, len, reject_non_finite, header) &
        bind(c, name="deconv_layer_read_weights")
      import
      integer(c_int) :: deconv_layer_read_weights
      type(c_ptr), value :: layer
      integer(c_int8_t), intent(in) :: data(*)
      integer(c_size_t), value :: len
      integer(c_int), value :: reject_non_finite
      type(c_ptr), value :: header
    end function deconv_layer_read_weights

    function deconv_config_from_cfg( &
        cfg, batch, in_channels, in_h, in_w, config) &
        bind(c, name="deconv_config_from_cfg")
      import
      integer(c_int) :: deconv_config_from_cfg
      character(kind=c_char), intent(in) :: cfg(*)
      integer(c_size_t), value :: batch
      integer(c_size_t), value :: in_channels
      integer(c_size_t), value :: in_h
      integer(c_size_t), value :: in_w
      type(deconv_config), intent(out) :: config
    end function deconv_config_from_cfg

    function deconv_layer_precision(layer, precision) bind(c, name="deconv_layer_precision")
      import
      integer(c_int) :: deconv_layer_precision
      type(c_ptr), value :: layer
      integer(c_int), intent(out) :: precision
    end function deconv_layer_precision

    function deconv_set_num_threads(threads) bind(c, name="deconv_set_num_threads")
      import
      integer(c_int) :: deconv_set_num_threads
      integer(c_size_t), value :: threads
    end function deconv_set_num_threads

    function deconv_num_threads(threads) bind(c, name="deconv_num_threads")
      import
      integer(c_int) :: deconv_num_threads
      integer(c_size_t), intent(out) :: threads
    end function deconv_num_threads

    function deconv_data_parallel_create(layer, collective, sync_batch_norm, out) &
        bind(c, name="deconv_data_parallel_create")
      import
      integer(c_int) :: deconv_data_parallel_create
      type(c_ptr), value :: layer
      type(deconv_collective), intent(in) :: collective
      integer(c_int), value :: sync_batch_norm
      type(c_ptr), intent(out) :: out
    end function deconv_data_parallel_create

    function deconv_data_parallel_free(dp) bind(c, name="deconv_data_parallel_free")
      import
      integer(c_int) :: deconv_data_parallel_free
      type(c_ptr), value :: dp
    end function deconv_data_parallel_free

    function deconv_data_parallel_global_batch(dp, global_batch) &
        bind(c, name="deconv_data_parallel_global_batch")
      import
      integer(c_int) :: deconv_data_parallel_global_batch
      type(c_ptr), value :: dp
      integer(c_size_t), intent(out) :: global_batch
    end function deconv_data_parallel_global_batch

    function deconv_data_parallel_broadcast_parameters(dp, layer, root) &
        bind(c, name="deconv_data_parallel_broadcast_parameters")
      import
      integer(c_int) :: deconv_data_parallel_broadcast_parameters
      type(c_ptr), value :: dp, layer
      integer(c_int), value :: root
    end function deconv_data_parallel_broadcast_parameters

    function deconv_data_parallel_forward(dp, layer, input, input_len, mode) &
        bind(c, name="deconv_data_parallel_forward")
      import
      integer(c_int) :: deconv_data_parallel_forward
      type(c_ptr), value :: dp, layer
      real(c_float), intent(in) :: input(*)
      integer(c_size_t), value :: input_len
      integer(c_int), value :: mode
    end function deconv_data_parallel_forward

    function deconv_data_parallel_forward_f64(dp, layer, input, input_len, mode) &
        bind(c, name="deconv_data_parallel_forward_f64")
      import
      integer(c_int) :: deconv_data_parallel_forward_f64
      type(c_ptr), value :: dp, layer
      real(c_double), intent(in) :: input(*)
      integer(c_size_t), value :: input_len
      integer(c_int), value :: mode
    end function deconv_data_parallel_forward_f64

    function deconv_data_parallel_backward(dp, layer, input, input_len, input_delta, &
        input_delta_len) bind(c, name="deconv_data_parallel_backward")
      import
      integer(c_int) :: deconv_data_parallel_backward
      type(c_ptr), value :: dp, layer
      real(c_float), intent(in) :: input(*)
      integer(c_size_t), value :: input_len
      type(c_ptr), value :: input_delta
      integer(c_size_t), value :: input_delta_len
    end function deconv_data_parallel_backward

    function deconv_data_parallel_backward_f64(dp, layer, input, input_len, input_delta, &
        input_delta_len) bind(c, name="deconv_data_parallel_backward_f64")
      import
      integer(c_int) :: deconv_data_parallel_backward_f64
      type(c_ptr), value :: dp, layer
      real(c_double), intent(in) :: input(*)
      integer(c_size_t), value :: input_len
      type(c_ptr), value :: input_delta
      integer(c_size_t), value :: input_delta_len
    end function deconv_data_parallel_backward_f64
  end interface
  public :: deconv_data_parallel_create, deconv_data_parallel_free
  public :: deconv_data_parallel_global_batch, deconv_data_parallel_broadcast_parameters
  public :: deconv_data_parallel_forward, deconv_data_parallel_forward_f64
  public :: deconv_data_parallel_backward, deconv_data_parallel_backward_f64
  public :: deconv_version
  public :: deconv_status_name
  public :: deconv_last_error
  public :: deconv_backend_compiled
  public :: deconv_config_default
  public :: deconv_update_args_sgd
  public :: deconv_update_args_sgd_f64
  public :: deconv_update_args_adam
  public :: deconv_update_args_adam_f64
  public :: deconv_layer_create
  public :: deconv_layer_create_f64
  public :: deconv_layer_clone
  public :: deconv_layer_free
  public :: deconv_layer_config
  public :: deconv_layer_geometry
  public :: deconv_layer_backend
  public :: deconv_layer_learning_rate_scale
  public :: deconv_layer_learning_rate_scale_f64
  public :: deconv_layer_set_learning_rate_scale
  public :: deconv_layer_set_learning_rate_scale_f64
  public :: deconv_layer_adam_step
  public :: deconv_layer_set_adam_step
  public :: deconv_layer_buffer
  public :: deconv_layer_buffer_f64
  public :: deconv_layer_buffer_mut
  public :: deconv_layer_buffer_mut_f64
  public :: deconv_layer_output
  public :: deconv_layer_output_f64
  public :: deconv_layer_delta
  public :: deconv_layer_delta_f64
  public :: deconv_layer_get
  public :: deconv_layer_get_f64
  public :: deconv_layer_set
  public :: deconv_layer_set_f64
  public :: deconv_layer_forward
  public :: deconv_layer_forward_f64
  public :: deconv_layer_forward_with_workspace
  public :: deconv_layer_forward_with_workspace_f64
  public :: deconv_layer_backward
  public :: deconv_layer_backward_f64
  public :: deconv_layer_backward_with_workspace
  public :: deconv_layer_backward_with_workspace_f64
  public :: deconv_layer_update
  public :: deconv_layer_update_f64
  public :: deconv_layer_resize
  public :: deconv_layer_bilinear_init
  public :: deconv_layer_denormalize
  public :: deconv_weights_header_default
  public :: deconv_layer_load_weights
  public :: deconv_layer_save_weights
  public :: deconv_layer_weights_byte_len
  public :: deconv_layer_write_weights
  public :: deconv_layer_read_weights
  public :: deconv_config_from_cfg
  public :: deconv_layer_precision
  public :: deconv_set_num_threads
  public :: deconv_num_threads

contains

  ! Stops with the library's message, or hands the status to `stat`.
  subroutine check(status, stat, what)
    integer(c_int), intent(in) :: status
    integer, intent(out), optional :: stat
    character(*), intent(in) :: what
    if (present(stat)) then
      stat = int(status)
    else if (status /= DECONV_OK) then
      write (error_unit, '(a)') "deconv: " // what // ": " // deconv_error_message()
      error stop 1
    end if
  end subroutine check

  ! A NUL-terminated C string as a Fortran string.
  function c_string(ptr) result(text)
    type(c_ptr), intent(in) :: ptr
    character(:), allocatable :: text
    character(kind=c_char), pointer :: chars(:)
    interface
      function strlen(s) bind(c, name="strlen")
        import :: c_ptr, c_size_t
        type(c_ptr), value :: s
        integer(c_size_t) :: strlen
      end function strlen
    end interface
    integer :: i, n
    n = int(strlen(ptr))
    call c_f_pointer(ptr, chars, [n])
    allocate (character(n) :: text)
    do i = 1, n
      text(i:i) = chars(i)
    end do
  end function c_string

  !> The message of the calling thread's last failed call ("" if none).
  function deconv_error_message() result(text)
    character(:), allocatable :: text
    text = c_string(deconv_last_error())
  end function deconv_error_message

  !> The name of a status code, e.g. "DECONV_ERR_BUFFER_LENGTH".
  function deconv_status_string(status) result(text)
    integer, intent(in) :: status
    character(:), allocatable :: text
    text = c_string(deconv_status_name(int(status, c_int)))
  end function deconv_status_string

  !> The library's version, e.g. "0.1.0".
  function deconv_version_string() result(text)
    character(:), allocatable :: text
    text = c_string(deconv_version())
  end function deconv_version_string

  !> The defaults for a square kernel (stride 1, pad 0, linear, ...), as deconv_config_default.
  function deconv_default_config(batch, in_channels, in_h, in_w, filters, kernel) result(config)
    integer, intent(in) :: batch, in_channels, in_h, in_w, filters, kernel
    type(deconv_config) :: config
    call check(deconv_config_default(config, int(batch, c_size_t), int(in_channels, c_size_t), &
      int(in_h, c_size_t), int(in_w, c_size_t), int(filters, c_size_t), int(kernel, c_size_t)), &
      what="deconv_config_default")
  end function deconv_default_config

  function sgd_f32(learning_rate, momentum, decay, batch) result(args)
    real(c_float), intent(in) :: learning_rate, momentum, decay
    integer, intent(in) :: batch
    type(deconv_update_args) :: args
    call check(deconv_update_args_sgd(args, learning_rate, momentum, decay, int(batch, c_size_t)), &
      what="deconv_update_args_sgd")
  end function sgd_f32

  function sgd_f64(learning_rate, momentum, decay, batch) result(args)
    real(c_double), intent(in) :: learning_rate, momentum, decay
    integer, intent(in) :: batch
    type(deconv_update_args_f64) :: args
    call check(deconv_update_args_sgd_f64(args, learning_rate, momentum, decay, &
      int(batch, c_size_t)), what="deconv_update_args_sgd_f64")
  end function sgd_f64

  function adam_f32(learning_rate, decay, batch) result(args)
    real(c_float), intent(in) :: learning_rate, decay
    integer, intent(in) :: batch
    type(deconv_update_args) :: args
    call check(deconv_update_args_adam(args, learning_rate, decay, int(batch, c_size_t)), &
      what="deconv_update_args_adam")
  end function adam_f32

  function adam_f64(learning_rate, decay, batch) result(args)
    real(c_double), intent(in) :: learning_rate, decay
    integer, intent(in) :: batch
    type(deconv_update_args_f64) :: args
    call check(deconv_update_args_adam_f64(args, learning_rate, decay, int(batch, c_size_t)), &
      what="deconv_update_args_adam_f64")
  end function adam_f64

  !> Creates the layer: float by default, double with precision=DECONV_PRECISION_F64; on the
  !> backend code `backend` (default DECONV_BACKEND_DEFAULT).
  subroutine layer_create(self, config, precision, backend, stat)
    class(deconv_layer), intent(inout) :: self
    type(deconv_config), intent(in) :: config
    integer(c_int), intent(in), optional :: precision, backend
    integer, intent(out), optional :: stat
    integer(c_int) :: code
    code = DECONV_BACKEND_DEFAULT
    if (present(backend)) code = backend
    if (present(precision)) then
      if (precision == DECONV_PRECISION_F64) then
        call check(deconv_layer_create_f64(config, code, self%ptr), stat, "deconv_layer_create_f64")
        return
      end if
    end if
    call check(deconv_layer_create(config, code, self%ptr), stat, "deconv_layer_create")
  end subroutine layer_create

  !> Frees the layer (nothing for a layer never created); the handle is NULL after.
  subroutine layer_free(self)
    class(deconv_layer), intent(inout) :: self
    call check(deconv_layer_free(self%ptr), what="deconv_layer_free")
    self%ptr = c_null_ptr
  end subroutine layer_free

  !> The layer's sizes.
  function layer_geometry(self) result(g)
    class(deconv_layer), intent(in) :: self
    type(deconv_geometry) :: g
    call check(deconv_layer_geometry(self%ptr, g), what="deconv_layer_geometry")
  end function layer_geometry

  subroutine forward_f32(self, input, mode, stat)
    class(deconv_layer), intent(inout) :: self
    real(c_float), intent(in), contiguous :: input(:)
    integer(c_int), intent(in) :: mode
    integer, intent(out), optional :: stat
    call check(deconv_layer_forward(self%ptr, input, size(input, kind=c_size_t), mode), stat, &
      "deconv_layer_forward")
  end subroutine forward_f32

  subroutine forward_f64(self, input, mode, stat)
    class(deconv_layer), intent(inout) :: self
    real(c_double), intent(in), contiguous :: input(:)
    integer(c_int), intent(in) :: mode
    integer, intent(out), optional :: stat
    call check(deconv_layer_forward_f64(self%ptr, input, size(input, kind=c_size_t), mode), &
      stat, "deconv_layer_forward_f64")
  end subroutine forward_f64

  !> Backward pass after a training forward; adds -dLoss/dInput to input_delta if given.
  subroutine backward_f32(self, input, input_delta, stat)
    class(deconv_layer), intent(inout) :: self
    real(c_float), intent(in), contiguous :: input(:)
    real(c_float), intent(inout), contiguous, target, optional :: input_delta(:)
    integer, intent(out), optional :: stat
    type(c_ptr) :: dx
    integer(c_size_t) :: n
    dx = c_null_ptr
    n = 0
    if (present(input_delta)) then
      dx = c_loc(input_delta)
      n = size(input_delta, kind=c_size_t)
    end if
    call check(deconv_layer_backward(self%ptr, input, size(input, kind=c_size_t), dx, n), stat, &
      "deconv_layer_backward")
  end subroutine backward_f32

  subroutine backward_f64(self, input, input_delta, stat)
    class(deconv_layer), intent(inout) :: self
    real(c_double), intent(in), contiguous :: input(:)
    real(c_double), intent(inout), contiguous, target, optional :: input_delta(:)
    integer, intent(out), optional :: stat
    type(c_ptr) :: dx
    integer(c_size_t) :: n
    dx = c_null_ptr
    n = 0
    if (present(input_delta)) then
      dx = c_loc(input_delta)
      n = size(input_delta, kind=c_size_t)
    end if
    call check(deconv_layer_backward_f64(self%ptr, input, size(input, kind=c_size_t), dx, n), &
      stat, "deconv_layer_backward_f64")
  end subroutine backward_f64

  subroutine update_f32(self, args, stat)
    class(deconv_layer), intent(inout) :: self
    type(deconv_update_args), intent(in) :: args
    integer, intent(out), optional :: stat
    call check(deconv_layer_update(self%ptr, args), stat, "deconv_layer_update")
  end subroutine update_f32

  subroutine update_f64(self, args, stat)
    class(deconv_layer), intent(inout) :: self
    type(deconv_update_args_f64), intent(in) :: args
    integer, intent(out), optional :: stat
    call check(deconv_layer_update_f64(self%ptr, args), stat, "deconv_layer_update_f64")
  end subroutine update_f64

  !> Copies `values` into the buffer `which` (a DECONV_BUFFER_* code); sizes must match.
  subroutine set_f32(self, which, values, stat)
    class(deconv_layer), intent(inout) :: self
    integer(c_int), intent(in) :: which
    real(c_float), intent(in), contiguous :: values(:)
    integer, intent(out), optional :: stat
    call check(deconv_layer_set(self%ptr, which, values, size(values, kind=c_size_t)), stat, &
      "deconv_layer_set")
  end subroutine set_f32

  subroutine set_f64(self, which, values, stat)
    class(deconv_layer), intent(inout) :: self
    integer(c_int), intent(in) :: which
    real(c_double), intent(in), contiguous :: values(:)
    integer, intent(out), optional :: stat
    call check(deconv_layer_set_f64(self%ptr, which, values, size(values, kind=c_size_t)), &
      stat, "deconv_layer_set_f64")
  end subroutine set_f64

  !> Copies the buffer `which` into `values`; sizes must match.
  subroutine get_f32(self, which, values, stat)
    class(deconv_layer), intent(in) :: self
    integer(c_int), intent(in) :: which
    real(c_float), intent(out), contiguous :: values(:)
    integer, intent(out), optional :: stat
    call check(deconv_layer_get(self%ptr, which, values, size(values, kind=c_size_t)), stat, &
      "deconv_layer_get")
  end subroutine get_f32

  subroutine get_f64(self, which, values, stat)
    class(deconv_layer), intent(in) :: self
    integer(c_int), intent(in) :: which
    real(c_double), intent(out), contiguous :: values(:)
    integer, intent(out), optional :: stat
    call check(deconv_layer_get_f64(self%ptr, which, values, size(values, kind=c_size_t)), &
      stat, "deconv_layer_get_f64")
  end subroutine get_f64

  !> Points `y` at the output of the last forward pass (valid until resize, denormalize, free).
  subroutine output_f32(self, y, stat)
    class(deconv_layer), intent(in) :: self
    real(c_float), pointer, intent(out) :: y(:)
    integer, intent(out), optional :: stat
    type(c_ptr) :: data
    integer(c_size_t) :: n
    integer(c_int) :: status
    nullify (y)
    status = deconv_layer_output(self%ptr, data, n)
    if (status == DECONV_OK) call c_f_pointer(data, y, [n])
    call check(status, stat, "deconv_layer_output")
  end subroutine output_f32

  subroutine output_f64(self, y, stat)
    class(deconv_layer), intent(in) :: self
    real(c_double), pointer, intent(out) :: y(:)
    integer, intent(out), optional :: stat
    type(c_ptr) :: data
    integer(c_size_t) :: n
    integer(c_int) :: status
    nullify (y)
    status = deconv_layer_output_f64(self%ptr, data, n)
    if (status == DECONV_OK) call c_f_pointer(data, y, [n])
    call check(status, stat, "deconv_layer_output_f64")
  end subroutine output_f64

  !> Points `d` at the delta (-dLoss/dOutput) to fill before backward.
  subroutine delta_f32(self, d, stat)
    class(deconv_layer), intent(inout) :: self
    real(c_float), pointer, intent(out) :: d(:)
    integer, intent(out), optional :: stat
    type(c_ptr) :: data
    integer(c_size_t) :: n
    integer(c_int) :: status
    nullify (d)
    status = deconv_layer_delta(self%ptr, data, n)
    if (status == DECONV_OK) call c_f_pointer(data, d, [n])
    call check(status, stat, "deconv_layer_delta")
  end subroutine delta_f32

  subroutine delta_f64(self, d, stat)
    class(deconv_layer), intent(inout) :: self
    real(c_double), pointer, intent(out) :: d(:)
    integer, intent(out), optional :: stat
    type(c_ptr) :: data
    integer(c_size_t) :: n
    integer(c_int) :: status
    nullify (d)
    status = deconv_layer_delta_f64(self%ptr, data, n)
    if (status == DECONV_OK) call c_f_pointer(data, d, [n])
    call check(status, stat, "deconv_layer_delta_f64")
  end subroutine delta_f64

end module deconv
