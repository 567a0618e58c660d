# Reference fits with lme4, for tests/test_lme4_reference.py.
#
# Run from the repository root:
#     Rscript tests/reference/lme4_reference.R
#
# Needs base R and lme4 only. Writes
#   tests/reference/data/{sleepstudy,Dyestuff,cbpp,Pastes,Penicillin}.csv
#                                       (datasets shipped with lme4), and
#   tests/reference/data/glmm_slopes.csv (drawn here with set.seed)
#   tests/reference/lme4_cases.csv      one row per case:
#                                       case,formula,family,reml,nagq,data,factors,lme4_control
#   tests/reference/lme4_fixtures.csv   long table: case,quantity,group,term,value
#   tests/reference/lme4_anova.csv      anova() of pairs of cases (likelihood-ratio tests):
#                                       comparison,model,quantity,value
#   tests/reference/lme4_session.txt    R / lme4 versions (sessionInfo())
# and READS (never writes) tests/reference/data/bp_study_seed123.csv, made by the
# project's Python simulator.
#
# All fits use lme4's default controls, except the *_tolpwrss cases (see below).

suppressPackageStartupMessages(library(lme4))

ref_dir <- file.path("tests", "reference")
data_dir <- file.path(ref_dir, "data")
if (!dir.exists(ref_dir)) {
  stop("run from the repository root: Rscript tests/reference/lme4_reference.R")
}
dir.create(data_dir, showWarnings = FALSE, recursive = TRUE)

num <- function(x) sprintf("%.17g", x)

# ---- datasets ---------------------------------------------------------------

# write.csv keeps 15 significant digits, which round-trips every value in these
# datasets (they are recorded with at most 6 significant digits).
write_data <- function(df, name) {
  write.csv(df, file.path(data_dir, paste0(name, ".csv")), row.names = FALSE)
}

data(sleepstudy, package = "lme4")
data(Dyestuff, package = "lme4")
data(cbpp, package = "lme4")
data(Pastes, package = "lme4")
data(Penicillin, package = "lme4")
cbpp$healthy <- cbpp$size - cbpp$incidence

write_data(sleepstudy, "sleepstudy")
write_data(Dyestuff, "Dyestuff")
write_data(cbpp, "cbpp")
write_data(Pastes, "Pastes")
write_data(Penicillin, "Penicillin")

# GLMMs with a correlated random slope: no lme4 dataset has one that is not singular
# (cbpp's period slope is), so draw one here, 40 groups x 25 rows, from R's own
# generator (set.seed makes the file the same on every R >= 3.6). x has 3 decimals
# and the outcomes are integers, so write.csv stores the values exactly.
set.seed(20261125)
n_groups <- 40
group <- rep(seq_len(n_groups), each = 25)
x <- round(runif(length(group), -1, 1), 3)
u0 <- rnorm(n_groups, 0, 0.6)
u1 <- 0.5 * u0 + sqrt(0.75) * rnorm(n_groups, 0, 0.5)  # slope correlated with intercept
slopes <- data.frame(group = group, x = x,
                     count = rpois(length(group), exp(0.5 + 0.4 * x + u0[group] + u1[group] * x)),
                     event = rbinom(length(group), 1, plogis(-0.3 + 0.8 * x + u0[group] + 1.5 * u1[group] * x)))
write_data(slopes, "glmm_slopes")
slopes$group <- factor(slopes$group)

bp_path <- file.path(data_dir, "bp_study_seed123.csv")
if (!file.exists(bp_path)) stop("missing ", bp_path, " (made by the project's simulator)")
bp <- read.csv(bp_path)
bp$hospital_id <- factor(bp$hospital_id)
bp$patient_id <- factor(bp$patient_id)

datasets <- list(sleepstudy = sleepstudy, Dyestuff = Dyestuff, cbpp = cbpp,
                 Pastes = Pastes, Penicillin = Penicillin, bp_study_seed123 = bp,
                 glmm_slopes = slopes)

# ---- cases ------------------------------------------------------------------

# factors: columns that are factors in R but are written as numbers in the CSV
# (cbpp's period is "1".."4"), so the Python test must read them as categories.
# Grouping factors are not listed: glmm_steps makes them categorical itself.
#
# lme4_control: "" = lme4's default controls. The *_tolpwrss cases refit every
# GLMM with glmerControl(tolPwrss = 1e-10) (everything else default). With the
# default tolPwrss = 1e-7 lme4's Laplace log-determinant (ldL2) is slightly stale
# at the reported conditional modes, which shifts logLik by ~3e-4 to 4e-4 and the
# estimates by up to ~7e-4 relative; with 1e-10 lme4 evaluates the exact Laplace
# approximation, and that is what the Python engine computes (see README.md).
#
# One row per case: case, formula, family, reml, nagq, data, factors. The panel covers
# every model form glmm_steps fits: random slopes with (|) and without (||) correlation
# (LMM and GLMM),
# nested (a/b) and crossed factors, ML and REML, binomial 0/1 and successes out of
# trials (both cbind forms), Poisson with an offset, and adaptive quadrature (nAGQ > 1).
case_table <- function(...) {
  rows <- list(...)
  data.frame(case = vapply(rows, `[[`, "", 1), formula = vapply(rows, `[[`, "", 2),
             family = vapply(rows, `[[`, "", 3), reml = vapply(rows, `[[`, NA, 4),
             nagq = vapply(rows, `[[`, 0L, 5), data = vapply(rows, `[[`, "", 6),
             factors = vapply(rows, `[[`, "", 7), lme4_control = "", stringsAsFactors = FALSE)
}
base <- case_table(
  list("sleepstudy_reml", "Reaction ~ Days + (Days | Subject)", "gaussian", TRUE, 1L, "sleepstudy", ""),
  list("sleepstudy_ml", "Reaction ~ Days + (Days | Subject)", "gaussian", FALSE, 1L, "sleepstudy", ""),
  list("dyestuff_reml", "Yield ~ 1 + (1 | Batch)", "gaussian", TRUE, 1L, "Dyestuff", ""),
  list("cbpp_laplace", "cbind(incidence, healthy) ~ period + (1 | herd)", "binomial", FALSE, 1L, "cbpp", "period"),
  list("bp_lmm_reml", "bp ~ time + (1 | hospital_id) + (1 | patient_id)", "gaussian", TRUE, 1L, "bp_study_seed123", ""),
  list("bp_lmm_ml", "bp ~ time + (1 | hospital_id) + (1 | patient_id)", "gaussian", FALSE, 1L, "bp_study_seed123", ""),
  list("bp_hypertension_laplace", "hypertension ~ time + (1 | hospital_id) + (1 | patient_id)", "binomial", FALSE, 1L, "bp_study_seed123", ""),
  list("bp_adverse_laplace", "adverse_events ~ time + (1 | hospital_id) + (1 | patient_id)", "poisson", FALSE, 1L, "bp_study_seed123", ""),
  # random intercept only: the smaller model of the anova() pair below
  list("sleepstudy_intercept_reml", "Reaction ~ Days + (1 | Subject)", "gaussian", TRUE, 1L, "sleepstudy", ""),
  # uncorrelated intercept and slope: lme4 expands || into (1 | g) + (0 + x | g)
  list("sleepstudy_uncorr_reml", "Reaction ~ Days + (1 + Days || Subject)", "gaussian", TRUE, 1L, "sleepstudy", ""),
  list("sleepstudy_uncorr_ml", "Reaction ~ Days + (1 + Days || Subject)", "gaussian", FALSE, 1L, "sleepstudy", ""),
  # nested: cask within batch (lme4 names the inner factor "cask:batch")
  list("pastes_reml", "strength ~ 1 + (1 | batch/cask)", "gaussian", TRUE, 1L, "Pastes", ""),
  list("pastes_ml", "strength ~ 1 + (1 | batch/cask)", "gaussian", FALSE, 1L, "Pastes", ""),
  # crossed: every plate sees every sample
  list("penicillin_reml", "diameter ~ 1 + (1 | plate) + (1 | sample)", "gaussian", TRUE, 1L, "Penicillin", ""),
  list("penicillin_ml", "diameter ~ 1 + (1 | plate) + (1 | sample)", "gaussian", FALSE, 1L, "Penicillin", ""),
  # successes out of trials written as cbind(successes, trials - successes), by
  # adaptive Gauss-Hermite quadrature with 9 points
  list("cbpp_agq9", "cbind(incidence, size - incidence) ~ period + (1 | herd)", "binomial", FALSE, 9L, "cbpp", "period"),
  # Poisson rate per animal: log(herd size) as offset
  list("cbpp_poisson_offset", "incidence ~ period + offset(log(size)) + (1 | herd)", "poisson", FALSE, 1L, "cbpp", "period"),
  # correlated random intercept and slope in a GLMM (Laplace): binomial 0/1 and Poisson
  list("slopes_binomial_laplace", "event ~ x + (x | group)", "binomial", FALSE, 1L, "glmm_slopes", ""),
  list("slopes_poisson_laplace", "count ~ x + (x | group)", "poisson", FALSE, 1L, "glmm_slopes", "")
)
tight <- base[base$family != "gaussian", ]
tight$case <- paste0(tight$case, "_tolpwrss")
tight$lme4_control <- "tolPwrss=1e-10"
cases <- rbind(base, tight)
rownames(cases) <- NULL

fit_case <- function(row) {
  df <- datasets[[row$data]]
  f <- as.formula(row$formula)
  if (row$family == "gaussian") {
    lmer(f, data = df, REML = row$reml)
  } else {
    ctrl <- eval(parse(text = sprintf("glmerControl(%s)", row$lme4_control)))
    glmer(f, data = df, family = get(row$family)(), nAGQ = row$nagq, control = ctrl)
  }
}

# ---- fixtures ---------------------------------------------------------------

rows <- list()
add <- function(case, quantity, group, term, value) {
  rows[[length(rows) + 1L]] <<- data.frame(case = case, quantity = quantity, group = group,
                                          term = term, value = num(value),
                                          stringsAsFactors = FALSE)
}

for (i in seq_len(nrow(cases))) {
  row <- cases[i, ]
  cs <- row$case
  m <- fit_case(row)
  msgs <- m@optinfo$conv$lme4$messages
  if (length(msgs)) message(cs, ": lme4 convergence messages: ", paste(msgs, collapse = "; "))
  if (isSingular(m)) message(cs, ": singular fit")

  fe <- fixef(m)
  se <- sqrt(diag(as.matrix(vcov(m))))
  for (t in names(fe)) {
    add(cs, "fixef", "", t, fe[[t]])
    add(cs, "se", "", t, se[[t]])
  }
  if (row$family != "gaussian") {
    # lme4's default GLMM vcov() uses the finite-difference Hessian of the deviance
    # over (theta, beta); use.hessian = FALSE gives the RX-based (conditional on
    # theta) one, which is what the Python engine reports.
    se_rx <- suppressWarnings(sqrt(diag(as.matrix(vcov(m, use.hessian = FALSE)))))
    for (t in names(fe)) add(cs, "se_rx", "", t, se_rx[[t]])
  }

  vc <- VarCorr(m)
  # VarCorr names the parts of an uncorrelated term (1 + x || g) "g" and "g.1";
  # names(m@cnms) keeps the grouping factor's own name for both, which is how
  # glmm_steps names them (one group, no correlation row).
  groups <- names(m@cnms)
  for (k0 in seq_along(vc)) {
    g <- groups[k0]
    v <- vc[[k0]]
    terms <- colnames(v)
    for (k in seq_along(terms)) add(cs, "variance", g, terms[k], v[k, k])
    if (length(terms) > 1) {
      cr <- attr(v, "correlation")
      for (a in 1:(length(terms) - 1)) for (b in (a + 1):length(terms)) {
        add(cs, "correlation", g, sprintf("cor(%s,%s)", terms[a], terms[b]), cr[a, b])
      }
    }
  }
  if (row$family == "gaussian") add(cs, "sigma", "Residual", "", sigma(m))

  add(cs, "logLik", "", "", as.numeric(logLik(m)))
  if (row$nagq > 1) {
    # With nAGQ > 1 lme4's deviance is on the scale of the deviance residuals: its
    # logLik leaves out the saturated model's log-likelihood, so it is not comparable
    # with the Laplace fit's (lme4 issue #161). Record that constant (the family's
    # log-likelihood at mu = y) so the test can compare on the full scale too.
    r <- m@resp
    add(cs, "saturated_logLik", "", "", -r$family$aic(r$y, r$n, r$y, r$weights, 0) / 2)
  }
  if (isREML(m)) {
    add(cs, "REMLcrit", "", "", REMLcrit(m))
  } else {
    # For glmer fits deviance() is the sum of squared conditional deviance
    # residuals, not -2 * logLik.
    add(cs, "deviance", "", "", deviance(m))
  }
  add(cs, "AIC", "", "", AIC(m))
  add(cs, "BIC", "", "", BIC(m))
  add(cs, "nobs", "", "", nobs(m))
  ng <- ngrps(m)
  for (g in names(ng)) add(cs, "ngroups", g, "", ng[[g]])
}

fixtures <- do.call(rbind, rows)
write.csv(fixtures, file.path(ref_dir, "lme4_fixtures.csv"), row.names = FALSE)

# ---- model comparison -------------------------------------------------------

# anova() of two REML fits: lme4 refits both by ML, orders them by npar and tests
# each against the one before it. One row per (model, quantity); Chisq, Df and p
# are absent for the first model, as in anova()'s table.
comparisons <- list(
  sleepstudy_slopes = c("sleepstudy_intercept_reml", "sleepstudy_reml")
)
arows <- list()
for (cmp in names(comparisons)) {
  cs <- comparisons[[cmp]]
  mods <- lapply(cs, function(k) fit_case(cases[cases$case == k, ]))
  a <- suppressMessages(anova(mods[[1]], mods[[2]], model.names = cs))
  for (k in rownames(a)) {
    for (q in c("npar", "AIC", "BIC", "logLik", "deviance", "Chisq", "Df", "Pr(>Chisq)")) {
      v <- a[k, q]
      if (!is.na(v)) {
        arows[[length(arows) + 1L]] <- data.frame(comparison = cmp, model = k, quantity = q,
                                                  value = num(v), stringsAsFactors = FALSE)
      }
    }
  }
}
write.csv(do.call(rbind, arows), file.path(ref_dir, "lme4_anova.csv"), row.names = FALSE)
write.csv(cases, file.path(ref_dir, "lme4_cases.csv"), row.names = FALSE)

writeLines(c(paste("lme4:", as.character(packageVersion("lme4"))),
             paste("Matrix:", as.character(packageVersion("Matrix"))),
             "",
             capture.output(sessionInfo())),
           file.path(ref_dir, "lme4_session.txt"))

message("wrote ", nrow(fixtures), " fixture rows for ", nrow(cases), " cases")
