// GARCH(1, 1); same priors and likelihood as examples/timeseries/garch.yaml (which, unlike the User's Guide,
// has proper priors and does not impose alpha1 + beta1 < 1). numpyro HalfNormal(2) = normal(0, 2) on
// <lower=0>; Uniform(0, 1) = uniform(0, 1) on <lower=0, upper=1>. sigma[1] = sigma1 (data), as the spec's
// recurrence starts.
data {
  int<lower=2> T;
  vector[T] r;
  real<lower=0> sigma1;
}
parameters {
  real mu;
  real<lower=0> alpha0;
  real<lower=0, upper=1> alpha1;
  real<lower=0, upper=1> beta1;
}
model {
  vector[T] sigma;
  sigma[1] = sigma1;
  for (t in 2:T) {
    sigma[t] = sqrt(alpha0 + alpha1 * square(r[t - 1] - mu) + beta1 * square(sigma[t - 1]));
  }
  mu ~ normal(0, 10);
  alpha0 ~ normal(0, 2);
  alpha1 ~ uniform(0, 1);
  beta1 ~ uniform(0, 1);
  r ~ normal(mu, sigma);
}
