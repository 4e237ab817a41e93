// Population PK, one compartment with first-order absorption; same priors, parameterization and likelihood as
// examples/ode/population_pk.yaml (eta non-centered). numpyro HalfNormal(s) = normal(0, s) on <lower=0>,
// LogNormal(m, s) = lognormal(m, s). The spec solves all subjects as one ODE (state (J, 2)) with diffrax's
// Tsit5 (explicit Runge-Kutta 5(4)), rtol 1e-6, atol 1e-8, max_steps 10000, from t0 = 0; here each subject's
// 2-state system is solved by ode_rk45_tol (Dormand-Prince 5(4)) with the same tolerances and step limit (Stan
// computes forward sensitivities, which a joint 2J-state system would multiply by J).
functions {
  vector absorption(real t, vector y, real ka, real k) {
    vector[2] dydt;
    dydt[1] = -ka * y[1];
    dydt[2] = ka * y[1] - k * y[2];
    return dydt;
  }
}
data {
  int<lower=1> T;
  int<lower=1> J;
  array[T] real ts;
  vector[J] dose;
  array[T] vector[J] conc;
}
parameters {
  real<lower=0> ka;
  real<lower=0> V;
  real log_CL;
  real<lower=0> omega;
  vector[J] eta_decentered;
  real<lower=0> sigma;
}
transformed parameters {
  vector[J] eta = omega * eta_decentered;
}
model {
  vector[J] CL = exp(log_CL + eta);
  ka ~ lognormal(0, 0.5);
  V ~ lognormal(log(30), 0.5);
  log_CL ~ normal(log(5), 1);
  omega ~ normal(0, 0.5);
  eta_decentered ~ std_normal();
  sigma ~ normal(0, 0.5);
  for (j in 1:J) {
    array[T] vector[2] amounts = ode_rk45_tol(absorption, [dose[j], 0]', 0, ts, 1e-6, 1e-8, 10000, ka,
                                              CL[j] / V);
    for (t in 1:T) {
      conc[t, j] ~ lognormal(log(fmax(amounts[t, 2], 1e-12) / V), sigma);
    }
  }
}
