// Varying intercepts and slopes, non-centered; same priors as examples/hierarchical_regression.yaml.
// numpyro HalfNormal(1) = normal(0, 1) on <lower=0>. county is 1-based here (0-based in the YAML).
data {
  int<lower=1> N;
  int<lower=1> J;
  vector[N] y;
  vector[N] x;
  array[N] int<lower=1, upper=J> county;
}
parameters {
  real mu_a;
  real mu_b;
  real<lower=0> sigma_a;
  real<lower=0> sigma_b;
  vector[J] a_decentered;
  vector[J] b_decentered;
  real<lower=0> sigma;
}
transformed parameters {
  vector[J] a = mu_a + sigma_a * a_decentered;
  vector[J] b = mu_b + sigma_b * b_decentered;
}
model {
  mu_a ~ normal(0, 5);
  mu_b ~ normal(0, 5);
  sigma_a ~ normal(0, 1);
  sigma_b ~ normal(0, 1);
  a_decentered ~ std_normal();
  b_decentered ~ std_normal();
  sigma ~ normal(0, 1);
  y ~ normal(a[county] + b[county] .* x, sigma);
}
