// Eight schools, non-centered; same priors as examples/eight_schools.yaml.
// numpyro HalfCauchy(5) = cauchy(0, 5) on <lower=0>.
data {
  int<lower=1> J;
  vector[J] y;
  vector<lower=0>[J] sigma;
}
parameters {
  real mu;
  real<lower=0> tau;
  vector[J] theta_decentered;
}
transformed parameters {
  vector[J] theta = mu + tau * theta_decentered;
}
model {
  mu ~ normal(0, 5);
  tau ~ cauchy(0, 5);
  theta_decentered ~ std_normal();
  y ~ normal(theta, sigma);
}
