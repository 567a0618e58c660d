# Reference fits with lme4, for tests/test_lme4_reference.py.
#
# Run from the repository root:
#     Rscript tests/reference/lme4_reference.R
#
# Needs base R and lme4 only. Writes
#   tests/reference/data/{sleepstudy,Dyestuff,cbpp}.csv  (datasets shipped with lme4)
#   tests/reference/lme4_cases.csv      one row per case:
#                                       case,formula,family,reml,nagq,data,factors,lme4_control
#   tests/reference/lme4_fixtures.csv   long table: case,quantity,group,term,value
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
cbpp$healthy <- cbpp$size - cbpp$incidence

write_data(sleepstudy, "sleepstudy")
write_data(Dyestuff, "Dyestuff")
write_data(cbpp, "cbpp")

bp_path <- file.path(data_dir, "bp_study_seed123.csv")
if (!file.exists(bp_path)) stop("missing ", bp_path, " (made by the project's simulator)")
bp <- read.csv(bp_path)
bp$hospital_id <- factor(bp$hospital_id)
bp$patient_id <- factor(bp$patient_id)

datasets <- list(sleepstudy = sleepstudy, Dyestuff = Dyestuff, cbpp = cbpp,
                 bp_study_seed123 = bp)

# ---- cases ------------------------------------------------------------------

# factors: columns that are factors in R but are written as numbers in the CSV
# (cbpp's period is "1".."4"), so the Python test must read them as categories.
# Grouping factors are not listed: glmm_steps makes them categorical itself.
#
# lme4_control: "" = lme4's default controls. The *_tolpwrss cases refit the three
# GLMMs with glmerControl(tolPwrss = 1e-10) (everything else default). With the
# default tolPwrss = 1e-7 lme4's Laplace log-determinant (ldL2) is slightly stale
# at the reported conditional modes, which shifts logLik by ~3e-4 to 4e-4 and the
# estimates by up to ~7e-4 relative; with 1e-10 lme4 evaluates the exact Laplace
# approximation, and that is what the Python engine computes (see README.md).
base <- data.frame(
  case = c("sleepstudy_reml", "sleepstudy_ml", "dyestuff_reml", "cbpp_laplace",
           "bp_lmm_reml", "bp_lmm_ml", "bp_hypertension_laplace", "bp_adverse_laplace"),
  formula = c("Reaction ~ Days + (Days | Subject)",
              "Reaction ~ Days + (Days | Subject)",
              "Yield ~ 1 + (1 | Batch)",
              "cbind(incidence, healthy) ~ period + (1 | herd)",
              "bp ~ time + (1 | hospital_id) + (1 | patient_id)",
              "bp ~ time + (1 | hospital_id) + (1 | patient_id)",
              "hypertension ~ time + (1 | hospital_id) + (1 | patient_id)",
              "adverse_events ~ time + (1 | hospital_id) + (1 | patient_id)"),
  family = c("gaussian", "gaussian", "gaussian", "binomial",
             "gaussian", "gaussian", "binomial", "poisson"),
  reml = c(TRUE, FALSE, TRUE, FALSE, TRUE, FALSE, FALSE, FALSE),
  nagq = 1L,
  data = c("sleepstudy", "sleepstudy", "Dyestuff", "cbpp",
           "bp_study_seed123", "bp_study_seed123", "bp_study_seed123", "bp_study_seed123"),
  factors = c("", "", "", "period", "", "", "", ""),
  lme4_control = "",
  stringsAsFactors = FALSE
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
  for (g in names(vc)) {
    v <- vc[[g]]
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
write.csv(cases, file.path(ref_dir, "lme4_cases.csv"), row.names = FALSE)

writeLines(c(paste("lme4:", as.character(packageVersion("lme4"))),
             paste("Matrix:", as.character(packageVersion("Matrix"))),
             "",
             capture.output(sessionInfo())),
           file.path(ref_dir, "lme4_session.txt"))

message("wrote ", nrow(fixtures), " fixture rows for ", nrow(cases), " cases")
