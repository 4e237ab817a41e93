// Gaussian-process regression in 1-D; same priors and likelihood as examples/gp_regression.yaml.
// numpyro InverseGamma(5, 5) = inv_gamma(5, 5); HalfNormal(s) = normal(0, s) on <lower=0>;
// cov_exp_quad(x, alpha, rho) = gp_exp_quad_cov(x, alpha, rho); MultivariateNormal(0, scale_tril=L) =
// multi_normal_cholesky(0, L).
data {
  int<lower=1> N;
  array[N] real x;
  vector[N] y;
}
parameters {
  real<lower=0> rho;
  real<lower=0> alpha;
  real<lower=0> sigma;
}
model {
  matrix[N, N] L = cholesky_decompose(add_diag(gp_exp_quad_cov(x, alpha, rho), square(sigma)));
  rho ~ inv_gamma(5, 5);
  alpha ~ normal(0, 2);
  sigma ~ normal(0, 1);
  y ~ multi_normal_cholesky(rep_vector(0, N), L);
}
