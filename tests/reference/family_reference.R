# Reference fits with lme4 for the families beyond gaussian/binomial(logit)/poisson(log),
# for tests/test_families.py.
#
# Run from the repository root:
#     Rscript tests/reference/family_reference.R
#
# Needs base R, lme4 and MASS (for glmer.nb). Writes
#   tests/reference/data/grouseticks_year.csv lme4's grouseticks with YEAR as text ("Y95")
#                                         and HEIGHT_c = HEIGHT - mean(HEIGHT)
#   tests/reference/family_cases.csv      case,formula,family,link,data,factors,lme4_control
#   tests/reference/family_fixtures.csv   long table case,quantity,group,term,value
# and reads data/sleepstudy.csv and data/cbpp.csv written by lme4_reference.R.

suppressPackageStartupMessages({library(lme4); library(MASS)})

ref_dir <- file.path("tests", "reference")
data_dir <- file.path(ref_dir, "data")
if (!dir.exists(ref_dir)) stop("run from the repository root: Rscript tests/reference/family_reference.R")
num <- function(x) sprintf("%.17g", x)

data(grouseticks, package = "lme4")
# YEAR as text so that a CSV reader sees a categorical column, as R's factor.
gt <- data.frame(INDEX = as.integer(as.character(grouseticks$INDEX)),
                 TICKS = grouseticks$TICKS,
                 BROOD = as.integer(as.character(grouseticks$BROOD)),
                 HEIGHT = grouseticks$HEIGHT,
                 YEAR = paste0("Y", grouseticks$YEAR),
                 LOCATION = as.integer(as.character(grouseticks$LOCATION)))
gt$HEIGHT_c <- gt$HEIGHT - mean(gt$HEIGHT)
# grouseticks_year.csv, not answers_reference.R's grouseticks.csv (YEAR as R writes it, 95..97)
write.csv(gt, file.path(data_dir, "grouseticks_year.csv"), row.names = FALSE)
gt <- read.csv(file.path(data_dir, "grouseticks_year.csv"))  # fit exactly what Python reads
gt$YEAR <- factor(gt$YEAR)
gt$LOCATION <- factor(gt$LOCATION)

sleep <- read.csv(file.path(data_dir, "sleepstudy.csv"))
sleep$Subject <- factor(sleep$Subject)
cbpp <- read.csv(file.path(data_dir, "cbpp.csv"))
cbpp$herd <- factor(cbpp$herd)
cbpp$period <- factor(cbpp$period)
datasets <- list(grouseticks_year = gt, sleepstudy = sleep, cbpp = cbpp)

gt_formula <- "TICKS ~ YEAR + HEIGHT_c + (1 | LOCATION)"
cbpp_formula <- "cbind(incidence, healthy) ~ period + (1 | herd)"
cases <- data.frame(
  case = c("grouseticks_nb", "grouseticks_poisson", "grouseticks_poisson_tolpwrss",
           "sleepstudy_gamma_log", "sleepstudy_gamma_log_tolpwrss", "sleepstudy_gamma_inverse",
           "cbpp_probit", "cbpp_probit_tolpwrss", "cbpp_cloglog", "cbpp_cloglog_tolpwrss"),
  formula = c(gt_formula, gt_formula, gt_formula,
              rep("Reaction ~ Days + (1 | Subject)", 3),
              rep(cbpp_formula, 4)),
  family = c("negative_binomial", "poisson", "poisson",
             "gamma", "gamma", "gamma",
             "binomial", "binomial", "binomial", "binomial"),
  link = c("log", "log", "log", "log", "log", "inverse", "probit", "probit", "cloglog", "cloglog"),
  data = c(rep("grouseticks_year", 3), rep("sleepstudy", 3), rep("cbpp", 4)),
  factors = c(rep("", 6), rep("period", 4)),
  # glmer.nb with tolPwrss = 1e-10 stops in its theta loop ("pwrssUpdate did not
  # converge"), so the negative binomial case has default controls only.
  lme4_control = c("", "", "tolPwrss = 1e-10", "", "tolPwrss = 1e-10", "",
                   "", "tolPwrss = 1e-10", "", "tolPwrss = 1e-10"),
  stringsAsFactors = FALSE)

rows <- list()
add <- function(cs, q, g, t, v) rows[[length(rows) + 1]] <<- data.frame(
  case = cs, quantity = q, group = g, term = t, value = num(v), stringsAsFactors = FALSE)

r_family <- function(family, link) {
  switch(family, poisson = poisson(link = link), binomial = binomial(link = link),
         gamma = Gamma(link = link))
}

for (i in seq_len(nrow(cases))) {
  row <- cases[i, ]
  cs <- row$case
  d <- datasets[[row$data]]
  ctrl <- if (row$lme4_control == "") glmerControl() else
    eval(parse(text = sprintf("glmerControl(%s)", row$lme4_control)))
  f <- as.formula(row$formula)
  m <- if (row$family == "negative_binomial") {
    glmer.nb(f, data = d, control = ctrl)
  } else {
    glmer(f, data = d, family = r_family(row$family, row$link), control = ctrl)
  }
  fe <- fixef(m)
  se <- sqrt(diag(as.matrix(vcov(m))))
  se_rx <- suppressWarnings(sqrt(diag(as.matrix(vcov(m, use.hessian = FALSE)))))
  for (t in names(fe)) {
    add(cs, "fixef", "", t, fe[[t]])
    add(cs, "se", "", t, se[[t]])
    add(cs, "se_rx", "", t, se_rx[[t]])
  }
  vc <- VarCorr(m)
  for (g in names(vc)) add(cs, "variance", g, "(Intercept)", vc[[g]][1, 1])
  if (row$family == "negative_binomial") add(cs, "theta", "", "", getME(m, "glmer.nb.theta"))
  if (row$family == "gamma") add(cs, "sigma", "Residual", "", sigma(m))
  # 1 when lme4 raised no convergence warning (checkConv messages), else 0
  add(cs, "converged", "", "", as.numeric(length(m@optinfo$conv$lme4$messages) == 0))
  add(cs, "logLik", "", "", as.numeric(logLik(m)))
  add(cs, "deviance", "", "", deviance(m))
  add(cs, "AIC", "", "", AIC(m))
  add(cs, "BIC", "", "", BIC(m))
  add(cs, "nobs", "", "", nobs(m))
  ng <- ngrps(m)
  for (g in names(ng)) add(cs, "ngroups", g, "", ng[[g]])
  # Pearson dispersion of the conditional fit, as performance::check_overdispersion
  # computes it for a glmer: sum of squared Pearson residuals / (nobs - df).
  pr <- residuals(m, type = "pearson")
  df_res <- nobs(m) - length(fe) - length(getME(m, "theta")) - (row$family == "negative_binomial")
  add(cs, "pearson_chisq", "", "", sum(pr^2))
  add(cs, "pearson_ratio", "", "", sum(pr^2) / df_res)
}

write.csv(cases, file.path(ref_dir, "family_cases.csv"), row.names = FALSE)
write.csv(do.call(rbind, rows), file.path(ref_dir, "family_fixtures.csv"), row.names = FALSE)
cat("wrote", nrow(cases), "cases\n")
