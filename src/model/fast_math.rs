//! Element-wise math for our CPU kernels, written so that the compiler vectorises it: libm's
//! `expf` is a scalar call (10% of a forward pass went to the softmax's and SiLU's `exp`), and
//! the kernels' f64 arithmetic ran at half the vector width. The hot loops are compiled twice,
//! for the baseline x86-64 and for AVX2 + FMA, and [`run`] picks one per call at run time.

/// `e^x` to within 2 ulp (Cephes' `expf`: `x = n ln 2 + r`, a degree-6 polynomial for `e^r`,
/// the exponent `n` put into the float's bits). Arguments are clamped to [-87.3, 88], where
/// `f32` holds the result as a normal number, so it never returns infinity or a denormal.
#[inline(always)]
pub(crate) fn exp(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    // 1.5 * 2^23: adding it rounds to an integer held in the low mantissa bits.
    const ROUND: f32 = 12_582_912.0;
    let x = x.clamp(-87.3, 88.0);
    let shifted = x * LOG2E + ROUND;
    let n = shifted - ROUND;
    let r = x - n * LN2_HI - n * LN2_LO;
    let mut p = 1.987_569_1e-4_f32;
    p = p * r + 1.398_199_9e-3;
    p = p * r + 8.333_452e-3;
    p = p * r + 4.166_579_6e-2;
    p = p * r + 1.666_666_5e-1;
    p = p * r + 0.5;
    let e_r = p * r * r + r + 1.0;
    // The integer n sits in the low bits of `shifted`; 2^n is (n + 127) << 23.
    let n_bits = (shifted.to_bits() as i32).wrapping_sub(ROUND.to_bits() as i32);
    let two_n = f32::from_bits((n_bits.wrapping_add(127) << 23) as u32);
    e_r * two_n
}

#[inline(always)]
pub(crate) fn sigmoid(z: f32) -> f32 {
    1.0 / (1.0 + exp(-z))
}

/// Sum in eight f32 lanes (so it vectorises), then in f64: for the runs of at most a few
/// thousand values our kernels add, the f32 part loses less than 1e-6 relative.
#[inline(always)]
pub(crate) fn sum(xs: &[f32], f: impl Fn(f32) -> f32) -> f64 {
    let mut lanes = [0f32; 8];
    let chunks = xs.chunks_exact(8);
    let tail = chunks.remainder();
    for chunk in chunks {
        for (lane, &v) in lanes.iter_mut().zip(chunk) {
            *lane += f(v);
        }
    }
    let tail: f64 = tail.iter().map(|&v| f64::from(f(v))).sum();
    lanes.iter().map(|&l| f64::from(l)).sum::<f64>() + tail
}

/// `sum(a b)`, summed as [`sum`].
#[inline(always)]
pub(crate) fn dot(a: &[f32], b: &[f32]) -> f64 {
    let mut lanes = [0f32; 8];
    let (a8, b8) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f64 = a8
        .remainder()
        .iter()
        .zip(b8.remainder())
        .map(|(&x, &y)| f64::from(x * y))
        .sum();
    for (a, b) in a8.zip(b8) {
        for ((lane, &x), &y) in lanes.iter_mut().zip(a).zip(b) {
            *lane += x * y;
        }
    }
    lanes.iter().map(|&l| f64::from(l)).sum::<f64>() + tail
}

/// Runs `f` compiled for AVX2 + FMA where the CPU has them, else for the baseline. `f` must be
/// `#[inline(always)]` code (closures are) for the wider instructions to reach its loops.
#[inline(always)]
pub(crate) fn run<R>(f: impl FnOnce() -> R) -> R {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
        #[target_feature(enable = "avx2,fma")]
        fn wide<R>(f: impl FnOnce() -> R) -> R {
            f()
        }
        // SAFETY: the CPU supports AVX2 and FMA (checked just above).
        #[allow(unsafe_code)]
        return unsafe { wide(f) };
    }
    f()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_matches_libm_to_a_few_ulp() {
        let mut worst = 0f32;
        let mut x = -87.0f32;
        while x < 88.0 {
            let (ours, libm) = (exp(x), x.exp());
            worst = worst.max(((ours - libm) / libm).abs());
            x += 0.0137;
        }
        assert!(worst < 3e-7, "worst relative error {worst}");
        assert_eq!(exp(0.0), 1.0);
        assert!(exp(-1000.0) > 0.0 && exp(-1000.0) < 1e-37);
        assert!(exp(1000.0).is_finite() && exp(1000.0) > 1e38);
    }

    #[test]
    fn sigmoid_saturates_without_nan() {
        assert_eq!(sigmoid(0.0), 0.5);
        assert!((sigmoid(200.0) - 1.0).abs() < 1e-7);
        assert!(sigmoid(-200.0) >= 0.0 && sigmoid(-200.0) < 1e-30);
    }

    #[test]
    fn lane_sum_is_the_plain_sum() {
        let xs: Vec<f32> = (0..1003).map(|i| (i as f32 * 0.37).sin()).collect();
        let plain: f64 = xs.iter().map(|&v| f64::from(v) * 2.0).sum();
        assert!((sum(&xs, |v| v * 2.0) - plain).abs() < 1e-4);
        assert_eq!(sum(&[], |v| v), 0.0);
        assert_eq!(run(|| sum(&[1.0, 2.0, 3.0], |v| v)), 6.0);
        let ys: Vec<f32> = (0..1003).map(|i| (i as f32 * 0.11).cos()).collect();
        let plain: f64 = xs
            .iter()
            .zip(&ys)
            .map(|(&a, &b)| f64::from(a) * f64::from(b))
            .sum();
        assert!((dot(&xs, &ys) - plain).abs() < 1e-4);
    }
}
