//! The behaviour our patches of candle-core (`vendor/candle-core/PATCHED.md`) must keep: every
//! matrix product writes its whole output although the output is no longer zeroed first, and
//! gradients that reach a node more than once still add up.

use candle_core::{Device, Tensor, Var};

/// `a @ b` summed by hand, for `(.., m, k) @ (.., k, n)` with equal batch dims.
fn naive_matmul(a: &Tensor, b: &Tensor) -> Vec<f32> {
    let (batch, m, k) = a.dims3().expect("a is 3-d");
    let n = b.dim(2).expect("b is 3-d");
    let a = a.flatten_all().and_then(|t| t.to_vec1::<f32>()).expect("a");
    let b = b.flatten_all().and_then(|t| t.to_vec1::<f32>()).expect("b");
    let mut out = vec![0f32; batch * m * n];
    for s in 0..batch {
        for i in 0..m {
            for j in 0..n {
                out[(s * m + i) * n + j] = (0..k)
                    .map(|l| a[(s * m + i) * k + l] * b[(s * k + l) * n + j])
                    .sum();
            }
        }
    }
    out
}

fn assert_close(got: &Tensor, want: &[f32]) {
    let got = got
        .flatten_all()
        .and_then(|t| t.to_vec1::<f32>())
        .expect("got");
    assert_eq!(got.len(), want.len());
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(
            (g - w).abs() <= 1e-4 * (1.0 + w.abs()),
            "element {i}: {g} vs {w}"
        );
    }
}

#[test]
fn matrix_products_write_every_element_of_their_output() {
    let device = Device::Cpu;
    // Fill freed memory with garbage first, so an unwritten element would show.
    for _ in 0..4 {
        drop(Tensor::full(f32::NAN, (3, 37, 41), &device).expect("garbage"));
    }
    let a = Tensor::randn(0f32, 1.0, (3, 37, 19), &device).expect("a");
    let b = Tensor::randn(0f32, 1.0, (3, 19, 41), &device).expect("b");
    assert_close(&a.matmul(&b).expect("batched"), &naive_matmul(&a, &b));

    // A rhs shared by every batch is folded into one (3 * 37, 19) @ (19, 41) product.
    let shared = b.narrow(0, 0, 1).expect("one rhs");
    let folded = a
        .matmul(&shared.broadcast_as((3, 19, 41)).expect("broadcast"))
        .expect("folded");
    let want = naive_matmul(&a, &shared.repeat((3, 1, 1)).expect("repeat"));
    assert_close(&folded, &want);

    // No sum at all: the product of (m, 0) and (0, n) is zeros.
    let empty_a = Tensor::zeros((5, 0), candle_core::DType::F32, &device).expect("empty a");
    let empty_b = Tensor::zeros((0, 7), candle_core::DType::F32, &device).expect("empty b");
    assert_close(&empty_a.matmul(&empty_b).expect("k = 0"), &[0.0; 35]);
}

#[test]
fn gradients_from_several_uses_of_a_node_add_up() {
    let x = Var::new(&[1.5f32, -2.0, 0.25], &Device::Cpu).expect("x");
    // y = x * x + 3 x: x reaches y three ways, so dy/dx = 2x + 3.
    let y = ((x.as_tensor() * x.as_tensor()).expect("x^2") + (x.as_tensor() * 3.0).expect("3x"))
        .expect("y");
    let grads = y.sum_all().and_then(|s| s.backward()).expect("backward");
    let dx = grads.get(x.as_tensor()).expect("gradient of x");
    assert_close(dx, &[6.0, -1.0, 3.5]);
}
