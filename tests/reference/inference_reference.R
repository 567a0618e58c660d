# Reference inference with lmerTest, pbkrtest and lme4, for tests/test_inference.py.
#
# Run from the repository root:
#     Rscript tests/reference/inference_reference.R
#
# Needs lme4, lmerTest and pbkrtest. Writes
#   tests/reference/data/cake_factors.csv  lme4's cake, temperature as plain text
#                                          (an ordered factor with polynomial
#                                          contrasts in R; here a treatment-coded one)
#   tests/reference/inference_cases.csv    case,formula,family,reml,data,factors
#   tests/reference/inference_fixtures.csv long table case,quantity,term,value
#   tests/reference/inference_session.txt  versions (sessionInfo())
# and READS the lme4 datasets written by lme4_reference.R (sleepstudy, Penicillin,
# Pastes, cbpp under tests/reference/data).

suppressPackageStartupMessages({
  library(lme4)
  library(lmerTest)
  library(pbkrtest)
})

ref_dir <- file.path("tests", "reference")
data_dir <- file.path(ref_dir, "data")
if (!dir.exists(data_dir)) {
  stop("run from the repository root: Rscript tests/reference/inference_reference.R")
}
num <- function(x) sprintf("%.17g", x)

data(cake, package = "lme4")
cake_out <- data.frame(replicate = as.character(cake$replicate), recipe = as.character(cake$recipe),
                       temperature = as.character(cake$temperature), angle = cake$angle,
                       temp = cake$temp)
write.csv(cake_out, file.path(data_dir, "cake_factors.csv"), row.names = FALSE)

read_case_data <- function(name, factors = character()) {
  d <- read.csv(file.path(data_dir, paste0(name, ".csv")), stringsAsFactors = TRUE)
  for (f in factors) d[[f]] <- factor(d[[f]])
  d
}

cases <- list(
  list(case = "sleep_slopes", formula = "Reaction ~ Days + (Days | Subject)", data = "sleepstudy", reml = TRUE),
  list(case = "penicillin", formula = "diameter ~ 1 + (1 | plate) + (1 | sample)", data = "Penicillin", reml = TRUE),
  list(case = "pastes_nested", formula = "strength ~ 1 + (1 | batch/cask)", data = "Pastes", reml = TRUE),
  list(case = "cake_factorial", formula = "angle ~ recipe * temperature + (1 | recipe:replicate)", data = "cake_factors", reml = TRUE,
       factors = "temperature"),
  list(case = "cake_numeric", formula = "angle ~ recipe * temp + (1 | recipe:replicate)", data = "cake_factors", reml = TRUE),
  list(case = "sleep_ml", formula = "Reaction ~ Days + (Days | Subject)", data = "sleepstudy", reml = FALSE),
  list(case = "cbpp", formula = "cbind(incidence, healthy) ~ period + (1 | herd)", data = "cbpp", reml = NA,
       family = "binomial", factors = "period")
)

rows <- list()
add <- function(case, quantity, term, value) {
  rows[[length(rows) + 1L]] <<- data.frame(case = case, quantity = quantity, term = term, value = num(value))
}

# lme4's confint(oldNames = FALSE) names ("sd_(Intercept)|Subject", "cor_Days.(Intercept)|Subject",
# "sigma") are kept as they are; the test maps them to variance_components rows.
add_profile <- function(case, fit) {
  ci <- suppressWarnings(confint(fit, method = "profile", oldNames = FALSE))
  for (i in seq_len(nrow(ci))) {
    add(case, "profile_low", rownames(ci)[i], ci[i, 1])
    add(case, "profile_high", rownames(ci)[i], ci[i, 2])
  }
}

case_rows <- list()
for (cs in cases) {
  family <- if (is.null(cs$family)) "gaussian" else cs$family
  factors <- if (is.null(cs$factors)) character() else cs$factors
  d <- read_case_data(cs$data, factors)
  case_rows[[length(case_rows) + 1L]] <- data.frame(
    case = cs$case, formula = cs$formula, family = family,
    reml = if (is.na(cs$reml)) "" else tolower(as.character(cs$reml)),
    data = cs$data, factors = paste(factors, collapse = ";"))
  if (family == "gaussian") {
    fit <- lmerTest::lmer(as.formula(cs$formula), data = d, REML = cs$reml)
    for (ddf in c("Satterthwaite", "Kenward-Roger")) {
      if (ddf == "Kenward-Roger" && !cs$reml) next
      key <- if (ddf == "Satterthwaite") "satterthwaite" else "kenward_roger"
      co <- summary(fit, ddf = ddf)$coefficients
      for (i in seq_len(nrow(co))) {
        term <- rownames(co)[i]
        add(cs$case, paste0(key, "_se"), term, co[i, "Std. Error"])
        add(cs$case, paste0(key, "_df"), term, co[i, "df"])
        add(cs$case, paste0(key, "_t"), term, co[i, "t value"])
        add(cs$case, paste0(key, "_p"), term, co[i, "Pr(>|t|)"])
      }
      if (length(fixef(fit)) > 1L) {
        a <- anova(fit, type = 3, ddf = ddf)
        for (i in seq_len(nrow(a))) {
          term <- rownames(a)[i]
          add(cs$case, paste0(key, "_anova_F"), term, a[i, "F value"])
          add(cs$case, paste0(key, "_anova_NumDF"), term, a[i, "NumDF"])
          add(cs$case, paste0(key, "_anova_DenDF"), term, a[i, "DenDF"])
          add(cs$case, paste0(key, "_anova_p"), term, a[i, "Pr(>F)"])
        }
      }
    }
    add_profile(cs$case, fit)
  } else {
    fit <- glmer(as.formula(cs$formula), data = d, family = binomial)
    # Type III Wald chi-square per term (car::Anova(type = 3) on a treatment-coded
    # model without interactions): the term's coefficients tested jointly, with the
    # covariance of vcov(use.hessian = FALSE), the one mixedlm's vcov() reproduces
    # (lme4's default Hessian-based one differs by about 1% on cbpp).
    b <- fixef(fit)
    V <- as.matrix(vcov(fit, use.hessian = FALSE))
    assign <- attr(getME(fit, "X"), "assign")
    labels <- attr(terms(fit), "term.labels")
    for (k in setdiff(sort(unique(assign)), 0L)) {
      idx <- which(assign == k)
      chisq <- drop(t(b[idx]) %*% solve(V[idx, idx, drop = FALSE], b[idx]))
      add(cs$case, "wald_anova_Chisq", labels[k], chisq)
      add(cs$case, "wald_anova_Df", labels[k], length(idx))
      add(cs$case, "wald_anova_p", labels[k], pchisq(chisq, length(idx), lower.tail = FALSE))
    }
    add_profile(cs$case, fit)
  }
}

write.csv(do.call(rbind, case_rows), file.path(ref_dir, "inference_cases.csv"), row.names = FALSE, quote = TRUE)
write.csv(do.call(rbind, rows), file.path(ref_dir, "inference_fixtures.csv"), row.names = FALSE, quote = TRUE)
writeLines(c(sprintf("lme4 %s, lmerTest %s, pbkrtest %s, Matrix %s", packageVersion("lme4"),
                     packageVersion("lmerTest"), packageVersion("pbkrtest"), packageVersion("Matrix")),
             capture.output(sessionInfo())),
           file.path(ref_dir, "inference_session.txt"))
