! Fortran example and check of deconv's Fortran module (fortran/deconv.f90): the layer of
! examples/c/deconv_example.c (1 image, 1 channel 2x2 -> 1 filter 4x4, kernel 2, stride 2,
! linear; weights 1 2 3 4, bias 0.5, input 1 2 3 4), a forward pass, a backward pass towards
! the target t(k) = mod(k, 5) and one SGD step, each checked against the numbers computed
! here from the definition. It prints the same "numbers:" lines as the C example (.ci/run
! compares them), then runs the same steps on a double layer and checks it agrees.
! Exits with a non-zero status on any mismatch.
program deconv_example
  use deconv
  implicit none

  integer :: failures = 0
  type(deconv_layer) :: layer, layer64
  type(deconv_config) :: config
  type(deconv_geometry) :: g
  real(c_float), pointer :: y(:), delta(:)
  real(c_double), pointer :: y64(:), delta64(:)
  real(c_float) :: w(4), x(4), bias, t(16), d(16), dx(4), wu(4), bu, got_wu(4), got_bu(1)
  real(c_float) :: dx_expected(4), new_w(4), new_b(1), expected(16)
  real(c_double) :: dx64(4), new_w64(4), new_b64(1)
  real(c_float), parameter :: lr = 0.01, momentum = 0.9, decay = 0.01
  integer :: i, j, a, b, k, status

  print '(a)', "deconv " // deconv_version_string() // ", Fortran example"

  ! The layer: input 2x2, 1 channel -> 1 filter, kernel 2, stride 2 (output 4x4).
  config = deconv_default_config(batch=1, in_channels=1, in_h=2, in_w=2, filters=1, kernel=2)
  config%stride = [2, 2]
  config%activation = DECONV_ACTIVATION_LINEAR
  call layer%create(config)
  g = layer%geometry()
  call check(g%out_h == 4 .and. g%out_w == 4 .and. g%output_len == 16 .and. g%weight_count == 4, &
    "output is 4x4, 16 values, 4 weights")

  ! Weights [c][n][kh][kw] = 1 2 / 3 4 (row-major, as in C), bias 0.5.
  w = [1.0, 2.0, 3.0, 4.0]
  bias = 0.5
  call layer%set(DECONV_BUFFER_WEIGHTS, w)
  call layer%set(DECONV_BUFFER_BIASES, [bias])

  ! Forward (inference): each input pixel x(i,j) stamps x(i,j) * w onto the 2x2 block at
  ! (2i, 2j), plus the bias. Arrays are row-major NCHW, index 1 + row * width + column.
  x = [1.0, 2.0, 3.0, 4.0]
  do i = 0, 1
    do j = 0, 1
      do a = 0, 1
        do b = 0, 1
          expected(1 + (2 * i + a) * 4 + 2 * j + b) = x(1 + 2 * i + j) * w(1 + 2 * a + b) + bias
        end do
      end do
    end do
  end do
  call layer%forward(x, DECONV_MODE_INFERENCE)
  call layer%output(y)
  call check(size(y) == 16 .and. all(y == expected), "forward output equals the 4x4 block pattern")
  call numbers("forward", y)

  ! Backward towards t: delta = t - y (descent direction of 0.5 * |y - t|^2).
  t = [(real(mod(k, 5), c_float), k = 0, 15)]
  call layer%forward(x, DECONV_MODE_TRAIN)
  call layer%output(y)
  call layer%delta(delta)
  d = t - y
  delta = d
  dx = 0
  call layer%backward(x, dx)
  ! Gradients from the definition: w(a,b) += sum x(i,j) * d(2i+a, 2j+b); bias += sum d;
  ! dx(i,j) += sum w(a,b) * d(2i+a, 2j+b).
  wu = 0
  dx_expected = 0
  do i = 0, 1
    do j = 0, 1
      do a = 0, 1
        do b = 0, 1
          k = 1 + (2 * i + a) * 4 + 2 * j + b
          wu(1 + 2 * a + b) = wu(1 + 2 * a + b) + x(1 + 2 * i + j) * d(k)
          dx_expected(1 + 2 * i + j) = dx_expected(1 + 2 * i + j) + w(1 + 2 * a + b) * d(k)
        end do
      end do
    end do
  end do
  bu = sum(d)
  call layer%get(DECONV_BUFFER_WEIGHT_UPDATES, got_wu)
  call layer%get(DECONV_BUFFER_BIAS_UPDATES, got_bu)
  call check(close(got_wu, wu) .and. close(got_bu, [bu]) .and. close(dx, dx_expected), &
    "weight, bias and input gradients match the definition")
  call numbers("weight_updates", got_wu)
  call numbers("bias_update", got_bu)
  call numbers("input_delta", dx)

  ! SGD (Darknet's update, batch 1): u = wu - decay * w; w += lr * u; bias += lr * bu.
  call layer%update(deconv_sgd(lr, momentum, decay, 1))
  call layer%get(DECONV_BUFFER_WEIGHTS, new_w)
  call layer%get(DECONV_BUFFER_BIASES, new_b)
  call check(close(new_w, w + lr * (wu - decay * w)) .and. close(new_b, [bias + lr * bu]), &
    "weights and bias follow the SGD formula")
  call numbers("weights_after_sgd", new_w)
  call numbers("bias_after_sgd", new_b)

  ! Errors come back through stat, with the library's message.
  call layer%forward(x(1:3), DECONV_MODE_INFERENCE, stat=status)
  print '(a)', "  short input: " // deconv_status_string(status) // ": " // deconv_error_message()
  call check(status == DECONV_ERR_BUFFER_LENGTH, "a wrong length is DECONV_ERR_BUFFER_LENGTH")
  call layer%forward([1.0_c_double, 2.0_c_double, 3.0_c_double, 4.0_c_double], &
    DECONV_MODE_INFERENCE, stat=status)
  call check(status == DECONV_ERR_INVALID_PARAMETER, "double input to a float layer is refused")

  ! The same steps on a double layer agree with the float ones.
  call layer64%create(config, precision=DECONV_PRECISION_F64)
  call layer64%set(DECONV_BUFFER_WEIGHTS, real(w, c_double))
  call layer64%set(DECONV_BUFFER_BIASES, [real(bias, c_double)])
  call layer64%forward(real(x, c_double), DECONV_MODE_TRAIN)
  call layer64%output(y64)
  call check(all(y64 == real(expected, c_double)), "double forward equals the block pattern")
  call layer64%delta(delta64)
  delta64 = real(t, c_double) - y64
  dx64 = 0
  call layer64%backward(real(x, c_double), dx64)
  call layer64%update(deconv_sgd(real(lr, c_double), real(momentum, c_double), &
    real(decay, c_double), 1))
  call layer64%get(DECONV_BUFFER_WEIGHTS, new_w64)
  call layer64%get(DECONV_BUFFER_BIASES, new_b64)
  call check(maxval(abs(dx64 - dx)) < 1e-5 .and. maxval(abs(new_w64 - new_w)) < 1e-5 .and. &
    abs(new_b64(1) - new_b(1)) < 1e-5, "the double layer agrees with the float one")

  call layer%free()
  call layer64%free()
  if (failures > 0) then
    print '(i0, a)', failures, " check(s) FAILED"
    error stop 1
  end if
  print '(a)', "all checks passed"

contains

  subroutine check(ok, what)
    logical, intent(in) :: ok
    character(*), intent(in) :: what
    if (ok) then
      print '(a)', "  [ ok ] " // what
    else
      print '(a)', "  [FAIL] " // what
      failures = failures + 1
    end if
  end subroutine check

  logical function close(got, want)
    real(c_float), intent(in) :: got(:), want(:)
    close = size(got) == size(want)
    if (close) close = all(abs(got - want) <= 1e-5 * (1 + abs(want)))
  end function close

  ! "numbers: name v1 v2 ...", six decimals, as the C example's printf("%.6f").
  subroutine numbers(name, v)
    character(*), intent(in) :: name
    real(c_float), intent(in) :: v(:)
    character(:), allocatable :: line
    character(32) :: buf
    integer :: n
    line = "numbers: " // name
    do n = 1, size(v)
      write (buf, '(f32.6)') v(n)
      line = line // " " // trim(adjustl(buf))
    end do
    print '(a)', line
  end subroutine numbers

end program deconv_example
