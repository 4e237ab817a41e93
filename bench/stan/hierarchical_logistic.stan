// Varying intercepts, K predictors, non-centered; same priors as examples/hierarchical_logistic.yaml.
// numpyro HalfNormal(1) = normal(0, 1) on <lower=0>; BernoulliLogits = bernoulli_logit.
// g is 1-based here (0-based in the YAML).
data {
  int<lower=1> N;
  int<lower=1> J;
  int<lower=1> K;
  array[N] int<lower=0, upper=1> y;
  matrix[N, K] X;
  array[N] int<lower=1, upper=J> g;
}
parameters {
  real mu_alpha;
  real<lower=0> sigma_alpha;
  vector[J] alpha_decentered;
  vector[K] beta;
}
transformed parameters {
  vector[J] alpha = mu_alpha + sigma_alpha * alpha_decentered;
}
model {
  mu_alpha ~ normal(0, 2);
  sigma_alpha ~ normal(0, 1);
  alpha_decentered ~ std_normal();
  beta ~ normal(0, 1);
  y ~ bernoulli_logit(alpha[g] + X * beta);
}
