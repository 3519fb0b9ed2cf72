//! A small scalar reverse-mode tape: values and, per node, up to two local partial derivatives.
//!
//! It computed the optimal proposal's per-minibatch parameter transforms (noise Cholesky factors,
//! Kalman gain, proposal covariance, input projection) until those moved to matrix-level adjoints
//! in `derived`: one node per scalar operation meant millions of nodes per minibatch for the
//! full-rank baselines (R = 30, 64 channels). `derived`'s tests keep the tape version as the
//! independent reference its hand-derived matrix adjoints must equal.

/// Index of a node on the tape.
pub type Var = usize;

/// The tape: values and, per node, up to two (parent, ∂node/∂parent) pairs.
#[derive(Debug, Default, Clone)]
pub struct Tape {
    values: Vec<f64>,
    parents: Vec<[(usize, f64); 2]>,
}

const NONE: (usize, f64) = (usize::MAX, 0.0);

/// Errors of tape computations (a matrix that is not positive definite / is singular).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum TapeError {
    /// Cholesky of a matrix that is not positive definite.
    #[error("matrix is not positive definite (pivot {pivot} = {value:e})")]
    NotPositiveDefinite {
        /// Pivot index.
        pivot: usize,
        /// Its value.
        value: f64,
    },
    /// Inverse of a singular matrix.
    #[error("matrix is singular (pivot {pivot})")]
    Singular {
        /// Pivot index.
        pivot: usize,
    },
}

impl Tape {
    /// An empty tape.
    pub fn new() -> Self {
        Self::default()
    }
    /// Value of a node.
    pub fn value(&self, v: Var) -> f64 {
        self.values[v]
    }
    /// Number of nodes.
    pub fn len(&self) -> usize {
        self.values.len()
    }
    /// Whether the tape is empty.
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }
    fn push(&mut self, value: f64, p: [(usize, f64); 2]) -> Var {
        self.values.push(value);
        self.parents.push(p);
        self.values.len() - 1
    }
    /// An input (leaf) or constant.
    pub fn leaf(&mut self, value: f64) -> Var {
        self.push(value, [NONE, NONE])
    }
    /// Leaves for a slice of values.
    pub fn leaves(&mut self, values: &[f64]) -> Vec<Var> {
        values.iter().map(|&v| self.leaf(v)).collect()
    }
    /// a + b
    pub fn add(&mut self, a: Var, b: Var) -> Var {
        self.push(self.values[a] + self.values[b], [(a, 1.0), (b, 1.0)])
    }
    /// a − b
    pub fn sub(&mut self, a: Var, b: Var) -> Var {
        self.push(self.values[a] - self.values[b], [(a, 1.0), (b, -1.0)])
    }
    /// a · b
    pub fn mul(&mut self, a: Var, b: Var) -> Var {
        let (va, vb) = (self.values[a], self.values[b]);
        self.push(va * vb, [(a, vb), (b, va)])
    }
    /// a / b
    pub fn div(&mut self, a: Var, b: Var) -> Var {
        let (va, vb) = (self.values[a], self.values[b]);
        self.push(va / vb, [(a, 1.0 / vb), (b, -va / (vb * vb))])
    }
    /// c · a for a constant c
    pub fn scale(&mut self, a: Var, c: f64) -> Var {
        self.push(self.values[a] * c, [(a, c), NONE])
    }
    /// a + c for a constant c
    pub fn add_const(&mut self, a: Var, c: f64) -> Var {
        self.push(self.values[a] + c, [(a, 1.0), NONE])
    }
    /// exp(a)
    pub fn exp(&mut self, a: Var) -> Var {
        let e = self.values[a].exp();
        self.push(e, [(a, e), NONE])
    }
    /// ln(a)
    pub fn ln(&mut self, a: Var) -> Var {
        let va = self.values[a];
        self.push(va.ln(), [(a, 1.0 / va), NONE])
    }
    /// sqrt(a)
    pub fn sqrt(&mut self, a: Var) -> Var {
        let s = self.values[a].sqrt();
        self.push(s, [(a, 0.5 / s), NONE])
    }
    /// max(a, c) for a constant floor c (gradient 0 below the floor, like `torch.clip`).
    pub fn clip_min(&mut self, a: Var, c: f64) -> Var {
        let va = self.values[a];
        if va >= c {
            self.push(va, [(a, 1.0), NONE])
        } else {
            self.push(c, [NONE, NONE])
        }
    }
    /// Σ of several nodes.
    pub fn sum(&mut self, xs: &[Var]) -> Var {
        let mut acc = match xs.first() {
            Some(&x) => x,
            None => return self.leaf(0.0),
        };
        for &x in &xs[1..] {
            acc = self.add(acc, x);
        }
        acc
    }
    /// Σ_i a_i b_i.
    pub fn dot(&mut self, a: &[Var], b: &[Var]) -> Var {
        let terms: Vec<Var> = a.iter().zip(b).map(|(&x, &y)| self.mul(x, y)).collect();
        self.sum(&terms)
    }

    /// Row-major (r × k) · (k × c).
    pub fn matmul(&mut self, a: &[Var], b: &[Var], r: usize, k: usize, c: usize) -> Vec<Var> {
        let mut out = Vec::with_capacity(r * c);
        for i in 0..r {
            for j in 0..c {
                let terms: Vec<Var> = (0..k)
                    .map(|l| self.mul(a[i * k + l], b[l * c + j]))
                    .collect();
                out.push(self.sum(&terms));
            }
        }
        out
    }

    /// Transpose of a row-major (r × c) matrix.
    pub fn transpose(a: &[Var], r: usize, c: usize) -> Vec<Var> {
        let mut out = Vec::with_capacity(r * c);
        for j in 0..c {
            for i in 0..r {
                out.push(a[i * c + j]);
            }
        }
        out
    }

    /// Inverse of an n × n matrix by Gauss–Jordan elimination with partial pivoting.
    pub fn inverse(&mut self, a: &[Var], n: usize) -> Result<Vec<Var>, TapeError> {
        let mut m: Vec<Var> = a.to_vec();
        let one = self.leaf(1.0);
        let zero = self.leaf(0.0);
        let mut inv: Vec<Var> = (0..n * n)
            .map(|i| if i / n == i % n { one } else { zero })
            .collect();
        for col in 0..n {
            let pivot_row = (col..n)
                .max_by(|&x, &y| {
                    self.values[m[x * n + col]]
                        .abs()
                        .total_cmp(&self.values[m[y * n + col]].abs())
                })
                .unwrap_or(col);
            if self.values[m[pivot_row * n + col]] == 0.0 {
                return Err(TapeError::Singular { pivot: col });
            }
            if pivot_row != col {
                for j in 0..n {
                    m.swap(col * n + j, pivot_row * n + j);
                    inv.swap(col * n + j, pivot_row * n + j);
                }
            }
            let p = m[col * n + col];
            for j in 0..n {
                m[col * n + j] = self.div(m[col * n + j], p);
                inv[col * n + j] = self.div(inv[col * n + j], p);
            }
            for row in 0..n {
                if row == col {
                    continue;
                }
                let f = m[row * n + col];
                for j in 0..n {
                    let a1 = self.mul(f, m[col * n + j]);
                    m[row * n + j] = self.sub(m[row * n + j], a1);
                    let b1 = self.mul(f, inv[col * n + j]);
                    inv[row * n + j] = self.sub(inv[row * n + j], b1);
                }
            }
        }
        Ok(inv)
    }

    /// Lower Cholesky factor of a symmetric positive-definite n × n matrix (reads the lower
    /// triangle); the strict upper triangle of the result is the constant 0.
    pub fn cholesky(&mut self, a: &[Var], n: usize) -> Result<Vec<Var>, TapeError> {
        let zero = self.leaf(0.0);
        let mut l = vec![zero; n * n];
        for j in 0..n {
            let mut d = a[j * n + j];
            for k in 0..j {
                let sq = self.mul(l[j * n + k], l[j * n + k]);
                d = self.sub(d, sq);
            }
            let dv = self.values[d];
            if dv.is_nan() || dv <= 0.0 {
                return Err(TapeError::NotPositiveDefinite {
                    pivot: j,
                    value: dv,
                });
            }
            let ljj = self.sqrt(d);
            l[j * n + j] = ljj;
            for i in j + 1..n {
                let mut s = a[i * n + j];
                for k in 0..j {
                    let p = self.mul(l[i * n + k], l[j * n + k]);
                    s = self.sub(s, p);
                }
                l[i * n + j] = self.div(s, ljj);
            }
        }
        Ok(l)
    }

    /// Inverse of a lower-triangular n × n matrix (forward substitution); result lower-triangular.
    pub fn lower_inverse(&mut self, l: &[Var], n: usize) -> Vec<Var> {
        let zero = self.leaf(0.0);
        let one = self.leaf(1.0);
        let mut inv = vec![zero; n * n];
        for col in 0..n {
            for i in col..n {
                let mut s = if i == col { one } else { zero };
                for k in col..i {
                    let p = self.mul(l[i * n + k], inv[k * n + col]);
                    s = self.sub(s, p);
                }
                inv[i * n + col] = self.div(s, l[i * n + i]);
            }
        }
        inv
    }

    /// Reverse sweep: given adjoints of some nodes (`seeds`), return the adjoint of every node.
    pub fn backward(&self, seeds: &[(Var, f64)]) -> Vec<f64> {
        let mut adj = vec![0.0; self.values.len()];
        for &(v, g) in seeds {
            adj[v] += g;
        }
        for i in (0..self.values.len()).rev() {
            let g = adj[i];
            if g == 0.0 {
                continue;
            }
            for &(p, d) in &self.parents[i] {
                if p != usize::MAX {
                    adj[p] += g * d;
                }
            }
        }
        adj
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// f(A) = Σ_ij (inv(A) + chol(A A^T + I))_ij · w_ij: tape gradient vs central differences.
    fn f(values: &[f64], n: usize) -> (f64, Vec<f64>) {
        let mut t = Tape::new();
        let a = t.leaves(values);
        let inv = t.inverse(&a, n).unwrap();
        let at = Tape::transpose(&a, n, n);
        let mut s = t.matmul(&a, &at, n, n, n);
        for i in 0..n {
            s[i * n + i] = t.add_const(s[i * n + i], 1.0);
        }
        let l = t.cholesky(&s, n).unwrap();
        let li = t.lower_inverse(&l, n);
        let mut terms = Vec::new();
        for i in 0..n * n {
            let w = 0.3 + 0.1 * i as f64;
            let x = t.add(inv[i], l[i]);
            let x = t.add(x, li[i]);
            terms.push(t.scale(x, w));
        }
        let out = t.sum(&terms);
        let adj = t.backward(&[(out, 1.0)]);
        (t.value(out), a.iter().map(|&v| adj[v]).collect())
    }

    #[test]
    fn inverse_and_cholesky_gradients_match_finite_differences() {
        let n = 3;
        let a = [2.0, 0.3, -0.4, 0.1, 1.5, 0.2, -0.3, 0.25, 1.8];
        let (_, g) = f(&a, n);
        for i in 0..a.len() {
            let h = 1e-6;
            let mut p = a;
            p[i] += h;
            let mut m = a;
            m[i] -= h;
            let fd = (f(&p, n).0 - f(&m, n).0) / (2.0 * h);
            assert!(
                (fd - g[i]).abs() < 1e-7 * (1.0 + fd.abs()),
                "{i}: {fd} vs {}",
                g[i]
            );
        }
    }

    #[test]
    fn inverse_is_correct_and_singular_is_an_error() {
        let mut t = Tape::new();
        let a = t.leaves(&[0.0, 2.0, 1.0, 1.0]); // needs pivoting
        let inv = t.inverse(&a, 2).unwrap();
        let vals: Vec<f64> = inv.iter().map(|&v| t.value(v)).collect();
        assert_eq!(vals, vec![-0.5, 1.0, 0.5, 0.0]);
        let s = t.leaves(&[1.0, 2.0, 2.0, 4.0]);
        assert!(t.inverse(&s, 2).is_err());
        let neg = t.leaves(&[-1.0, 0.0, 0.0, 1.0]);
        assert!(t.cholesky(&neg, 2).is_err());
    }
}
